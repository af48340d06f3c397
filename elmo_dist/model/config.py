"""ModelConfig: the biLM's sizes and options, in the bilm-tf / AllenNLP options schema.

Presets (parameter counts without the softmax, checked in tests/unit/test_model.py):
  small    LSTM 1024/128, 1 highway  -> 13.6M  (the published ELMo "small")
  medium   LSTM 2048/256, 1 highway  -> 28.0M
  original LSTM 4096/512, 2 highways -> 93.6M
  tiny     a few hundred thousand parameters, for tests and the 2-core demo
All published presets use the 2048-filter character CNN with 16-dim character embeddings and
cell/projection clips of 3 (Peters et al. 2018; bilm-tf options).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

ELMO_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]
SOFTMAX_KINDS = ("full", "adaptive")
LSTM_IMPLS = ("auto", "torch", "triton", "reference")


@dataclass
class ModelConfig:
    lstm_dim: int = 1024
    """H: LSTM hidden units per layer and direction."""
    projection_dim: int = 128
    """P: size of the projected LSTM state and of the token embedding."""
    n_layers: int = 2
    """LSTM layers per direction."""
    cell_clip: Optional[float] = 3.0
    """Clip the LSTM cell to +-cell_clip each step (None: no clipping)."""
    proj_clip: Optional[float] = 3.0
    """Clip the projected state to +-proj_clip each step (None: no clipping)."""
    use_skip_connections: bool = True
    """Residual connection around every LSTM layer but the first."""
    char_embed_dim: int = 16
    """Character embedding size."""
    filters: list = field(default_factory=lambda: [list(f) for f in ELMO_FILTERS])
    """Character CNN filter bank as [[width, count], ...]."""
    n_highway: int = 1
    """Highway layers after the character CNN."""
    activation: str = "relu"
    """Activation after the max over time of the CNN: relu or tanh."""
    max_characters_per_token: int = 50
    """Character slots per token (48 bytes of the word plus begin/end of word)."""
    n_characters: int = 262
    """Character vocabulary including the padding id 0."""
    dropout: float = 0.1
    """Dropout on LSTM inputs, between layers and before the softmax (bilm-tf: 0.1)."""
    vocab_size: int = 0
    """Softmax vocabulary size (set from the vocabulary file by pretrain)."""
    softmax: str = "full"
    """full, or adaptive (needs a frequency-sorted vocabulary; see adaptive_cutoffs)."""
    adaptive_cutoffs: list = field(default_factory=lambda: [2000, 10000])
    """Adaptive softmax cluster boundaries (word ids); cutoffs >= vocab_size are dropped."""
    adaptive_div_value: float = 4.0
    """Each adaptive tail cluster projects to dim / div_value**k."""
    lstm_impl: str = "auto"
    """LSTM recurrence: auto (triton on CUDA, torch on CPU), torch, triton or reference."""

    def __post_init__(self):
        for name in ("lstm_dim", "projection_dim", "n_layers", "char_embed_dim",
                     "max_characters_per_token", "n_characters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.n_highway < 0:
            raise ValueError(f"ModelConfig.n_highway must be >= 0; got {self.n_highway}")
        for name in ("cell_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"ModelConfig.{name} must be > 0 or None (no clipping); got {value}")
        if not self.filters or any(len(f) != 2 or int(f[0]) < 1 or int(f[1]) < 1 for f in self.filters):
            raise ValueError(f"ModelConfig.filters must be a non-empty list of [width, count] pairs of positive ints; got {self.filters}")
        if max(int(f[0]) for f in self.filters) > self.max_characters_per_token:
            raise ValueError("ModelConfig.filters: a filter is wider than max_characters_per_token")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"ModelConfig.activation must be relu or tanh; got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.softmax not in SOFTMAX_KINDS:
            raise ValueError(f"ModelConfig.softmax must be one of {SOFTMAX_KINDS}; got {self.softmax!r}")
        if self.lstm_impl not in LSTM_IMPLS:
            raise ValueError(f"ModelConfig.lstm_impl must be one of {LSTM_IMPLS}; got {self.lstm_impl!r}")
        if sorted(self.adaptive_cutoffs) != list(self.adaptive_cutoffs) or any(c < 1 for c in self.adaptive_cutoffs):
            raise ValueError(f"ModelConfig.adaptive_cutoffs must be increasing positive ints; got {self.adaptive_cutoffs}")
        if self.softmax == "adaptive" and self.vocab_size > 0 and min(self.adaptive_cutoffs, default=0) >= self.vocab_size:
            # checked here, when the vocabulary size is set, so a run fails before its files are written
            raise ValueError(adaptive_cutoff_error(self.adaptive_cutoffs, self.vocab_size))
        if self.adaptive_div_value < 1:
            raise ValueError(f"ModelConfig.adaptive_div_value must be >= 1; got {self.adaptive_div_value}")
        self.filters = [[int(w), int(c)] for w, c in self.filters]

    @property
    def n_filters(self) -> int:
        return sum(count for _, count in self.filters)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(lstm_dim=256, projection_dim=64, n_layers=2, char_embed_dim=8,
                 filters=[[1, 32], [2, 32], [3, 64], [4, 64], [5, 64]], n_highway=1),
    "small": dict(lstm_dim=1024, projection_dim=128, n_highway=1),
    "medium": dict(lstm_dim=2048, projection_dim=256, n_highway=1),
    "original": dict(lstm_dim=4096, projection_dim=512, n_highway=2),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The named preset with ``overrides`` applied (e.g. vocab_size)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def adaptive_cutoff_error(cutoffs: list, vocab_size: int) -> str:
    """The message for adaptive-softmax cutoffs that leave no cluster below the vocabulary size."""
    return (f"adaptive softmax: every cutoff of {list(cutoffs)} is >= the vocabulary size {vocab_size}; give "
            f"--cutoffs (ModelConfig.adaptive_cutoffs) below {vocab_size}, e.g. {max(1, vocab_size // 4)}, "
            "or use --softmax full")
