"""Training: wires the biLM to DeepSpeed, checkpoints, metrics and evaluation."""
from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .evaluate import evaluate_perplexity
from .loop import pretrain
from .rundir import load_model, load_run_config

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "evaluate_perplexity", "load_model",
           "load_run_config", "pretrain"]
