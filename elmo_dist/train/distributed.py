"""DeepSpeed wiring: the launcher environment, the engine config, the engine.

One code path serves one process and N nodes: when no launcher set RANK/WORLD_SIZE/... (a plain
``elmo-dist pretrain``), we set the single-process values ourselves, because without them
``deepspeed.initialize`` falls back to MPI discovery and fails.
"""
from __future__ import annotations

import os
import socket
from typing import Any

import torch

from .config import OptimConfig, TrainConfig

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launcher_env() -> bool:
    """Sets single-process launcher variables when none are present; True if it set them."""
    present = [v for v in LAUNCHER_VARS if v in os.environ]
    if len(present) == len(LAUNCHER_VARS):
        return False
    if present and set(present) != {"MASTER_ADDR", "MASTER_PORT"} and set(present) != {"MASTER_PORT"}:
        missing = [v for v in LAUNCHER_VARS if v not in os.environ]
        raise RuntimeError(f"launcher environment is incomplete: {missing} unset while {present} are set; "
                           "launch with `deepspeed` or `torchrun`, or unset them all for one process")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return True


def world() -> tuple[int, int]:
    """(rank, world_size) from the launcher environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def deepspeed_config(train: TrainConfig, optim: OptimConfig) -> dict[str, Any]:
    """The DeepSpeed config for a run: ZeRO 0 data parallel, our own optimizer and clipping."""
    _, world_size = world()
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": train.batch_size * train.grad_accum_steps * world_size,
        # DeepSpeed's default is 1.0; bilm-tf clips at 10. 0 disables.
        "gradient_clipping": float(optim.grad_clip),
        "zero_optimization": {"stage": 0},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train.precision == "bf16":
        # Autocast keeps fp32 master weights and plain optimizer state (checkpoints stay
        # loadable with weights_only=True) and works the same on CPU and GPU.
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return cfg


def build_optimizer(params, optim: OptimConfig) -> torch.optim.Optimizer:
    if optim.optimizer == "adagrad":
        # bilm-tf: AdagradOptimizer(lr, initial_accumulator_value=1.0).
        return torch.optim.Adagrad(params, lr=optim.lr, initial_accumulator_value=1.0,
                                   weight_decay=optim.weight_decay)
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)


def initialize_engine(module: torch.nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict[str, Any]):
    """deepspeed.initialize with the launcher environment in place; returns the engine."""
    ensure_launcher_env()
    import deepspeed  # imported here: model code and `--help` never pay for it
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
    return engine
