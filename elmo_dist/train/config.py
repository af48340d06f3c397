"""Typed, validated configuration of a pretraining run; saved as config.json in the run directory
and inside every checkpoint."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from elmo_dist.model import ModelConfig

OPTIMIZERS = ("adagrad", "adam")
PRECISIONS = ("fp32", "bf16")


@dataclass
class DataConfig:
    train: list = field(default_factory=list)
    """Training corpus: files, directories or globs; empty = the Penn Treebank default."""
    valid: list = field(default_factory=list)
    """Held-out corpus for periodic perplexity; empty = PTB valid (with the default corpus) or none."""
    tokenizer: str = "whitespace"
    """whitespace (pre-tokenized), treebank, nltk or toktok."""
    vocab_min_count: int = 1
    """Words seen fewer times than this map to <UNK>."""
    vocab_max_size: Optional[int] = None
    """Keep at most this many entries (including <S>, </S>, <UNK>)."""
    max_line_bytes: int = 1_000_000
    """Longer lines are skipped and counted in the data report."""

    def __post_init__(self):
        from elmo_dist.data.tokenize import TOKENIZERS
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"DataConfig.tokenizer must be one of {TOKENIZERS}; got {self.tokenizer!r}")
        if self.vocab_min_count < 1:
            raise ValueError(f"DataConfig.vocab_min_count must be >= 1; got {self.vocab_min_count}")
        if self.vocab_max_size is not None and self.vocab_max_size < 4:
            raise ValueError(f"DataConfig.vocab_max_size must be >= 4 (3 specials + 1 word) or None; got {self.vocab_max_size}")
        if self.max_line_bytes < 16:
            raise ValueError(f"DataConfig.max_line_bytes must be >= 16; got {self.max_line_bytes}")


@dataclass
class OptimConfig:
    optimizer: str = "adagrad"
    """adagrad (bilm-tf: lr 0.2, initial accumulator 1.0) or adam."""
    lr: float = 0.2
    """Learning rate."""
    warmup_steps: int = 0
    """Linear warm-up of the learning rate over this many optimizer steps."""
    schedule: str = "constant"
    """After the warm-up: constant (bilm-tf), cosine (to min_lr_ratio x lr at max_steps) or
    inverse-sqrt (see train/schedule.py)."""
    min_lr_ratio: float = 0.0
    """The cosine schedule's floor, as a fraction of lr."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (bilm-tf: 10); 0 disables."""
    weight_decay: float = 0.0
    """Decoupled weight decay (Adam) / L2 (Adagrad)."""

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"OptimConfig.optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"OptimConfig.lr must be > 0; got {self.lr}")
        from .schedule import SCHEDULES
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptimConfig.schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"OptimConfig.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("OptimConfig.warmup_steps, grad_clip and weight_decay must be >= 0")


@dataclass
class TrainConfig:
    batch_size: int = 32
    """Rows per micro-batch on each rank (bilm-tf: 128 per GPU); each row carries its LSTM state."""
    num_steps: int = 20
    """Tokens per row per batch: the truncated-BPTT window (bilm-tf: 20)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int = 100_000
    """Stop after this many optimizer steps."""
    max_minutes: Optional[float] = None
    """Also stop after this much wall time (minutes); a checkpoint is written at the stop."""
    early_stop_patience: Optional[int] = None
    """Stop when held-out perplexity has not improved for this many evaluations in a row (every
    eval_every steps; needs a valid corpus). The best one's checkpoint is kept as checkpoints/best
    whenever periodic evaluations run."""
    epochs: Optional[int] = None
    """Also stop after this many passes over the training corpus (bilm-tf's n_epochs): every
    batch row reads its region exactly this many times, rows that finish first pad, and the
    run stops when every row of every rank has finished; counted exactly across resumes."""
    precision: str = "fp32"
    """fp32, or bf16 (autocast compute, fp32 master weights and optimizer state)."""
    seed: int = 1234
    """Seeds parameter init and dropout."""
    log_every: int = 20
    """Write train metrics every this many steps."""
    eval_every: int = 500
    """Held-out perplexity every this many steps (0: only at the end)."""
    eval_max_batches: Optional[int] = None
    """Cap the periodic evaluation at this many batches (None: the whole held-out corpus)."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 3
    """Keep the newest this many checkpoints."""
    wandb_mode: str = "offline"
    """offline (default), online or disabled."""
    wandb_project: str = "elmo-dist"
    """wandb project name."""

    def __post_init__(self):
        for name in ("batch_size", "num_steps", "grad_accum_steps", "max_steps", "log_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0; got {getattr(self, name)}")
        if self.early_stop_patience is not None and int(self.early_stop_patience) < 1:
            raise ValueError(f"TrainConfig.early_stop_patience must be >= 1 or None; got {self.early_stop_patience}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1 or None; got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"TrainConfig.max_minutes must be > 0 or None; got {self.max_minutes}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"TrainConfig.wandb_mode must be offline, online or disabled; got {self.wandb_mode!r}")


@dataclass
class RunConfig:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": dataclasses.asdict(self.data),
                "optim": dataclasses.asdict(self.optim), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        missing = {"model", "data", "optim", "train"} - set(d)
        if missing:
            raise ValueError(f"run config is missing sections {sorted(missing)}")
        return cls(ModelConfig.from_dict(d["model"]), _build(DataConfig, d["data"]),
                   _build(OptimConfig, d["optim"]), _build(TrainConfig, d["train"]))

    def save(self, path: Path) -> None:
        from elmo_dist.utils import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no run config here; is this a run directory made by `elmo-dist pretrain`?") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: run config is not valid JSON ({e})") from None


def _build(cls, d: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**d)


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``cfg`` with ``overrides`` set: keys ``section.field`` (``optim.lr``) or a bare TrainConfig
    field (``max_steps``); each section re-validated."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, name = key.split(".", 1) if "." in key else ("train", key)
        if section not in ("model", "data", "optim", "train") or not hasattr(getattr(cfg, section), name):
            raise ValueError(f"unknown configuration field {key!r}")
        sections.setdefault(section, {})[name] = value
    for section, changes in sections.items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **changes))
    return cfg
