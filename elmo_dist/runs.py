"""Trained biLMs for every stage after pretraining: the one loader.

``evaluate``, ``export``, ``classify`` and the Python API (``elmo_dist.embed``) get their model
here, from a run directory made by ``elmo-dist pretrain`` (its latest valid checkpoint, or a
given one) or from bilm-tf/AllenNLP ``options.json`` + ``lm_weights.hdf5``; the device default
is :func:`elmo_dist.utils.pick_device`'s. Downstream packages import this module, never the
training internals under ``elmo_dist.train`` (tests/unit/test_layering.py pins it), so the run
directory's layout can change in one place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from elmo_dist.model import BiLM, ModelConfig
from elmo_dist.utils import pick_device


def load_run(run_dir: Path | str, checkpoint: Optional[Path | str] = None, stateful: bool = True):
    """(biLM in eval mode on the CPU, RunConfig, Vocabulary) of a run directory."""
    from elmo_dist.train.rundir import load_model
    return load_model(Path(run_dir), Path(checkpoint) if checkpoint else None, stateful=stateful)


def load_bilm(run_dir: Optional[Path | str] = None, checkpoint: Optional[Path | str] = None,
              options: Optional[Path | str] = None, weights: Optional[Path | str] = None,
              device: Optional[str] = None, stateful: bool = False) -> BiLM:
    """The biLM of a run directory (its latest valid checkpoint, or ``checkpoint``) or of
    bilm-tf/AllenNLP ``options`` + ``weights`` files, in eval mode on ``device`` (default: cuda
    when available). A missing device fails before any weights are read."""
    if run_dir is not None and (options or weights):
        raise ValueError("give either --run-dir or --options/--weights, not both")
    chosen = pick_device(device)
    if run_dir is not None:
        model, _, _ = load_run(run_dir, checkpoint, stateful=stateful)
    elif options and weights:
        model = BiLM.from_allennlp(options, weights, stateful=stateful)
    else:
        raise ValueError("no model: give --run-dir RUN, or --options options.json and --weights lm_weights.hdf5")
    return model.to(chosen).eval()


def checkpoint_paths(run_dir: Path | str) -> list[Path]:
    """A run's complete checkpoints, oldest first."""
    from elmo_dist.train.checkpoint import list_checkpoints
    return list_checkpoints(Path(run_dir))


def run_model_config(run_dir: Path | str) -> tuple[ModelConfig, int]:
    """(ModelConfig, seed) a run directory was trained from (its config.json)."""
    from elmo_dist.train.rundir import load_run_config
    cfg = load_run_config(Path(run_dir))
    return cfg.model, cfg.train.seed


def untrained_bilm(model_config: ModelConfig, seed: int, device: Optional[str] = None) -> BiLM:
    """The biLM ``elmo-dist pretrain`` of this configuration and seed starts from (the random-init
    control), stateless, in eval mode on ``device``; the caller's global RNG state is kept."""
    from elmo_dist.train.rundir import init_model
    with torch.random.fork_rng(devices=[]):
        model = init_model(model_config, seed, stateful=False)
    return model.to(pick_device(device)).eval()
