"""What the DeepSpeed engine wraps, and the carried LSTM state in checkpoint form."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from elmo_dist.model import BiLM, BiLMState, LSTMState


class LMObjective(nn.Module):
    """What the engine wraps: forward = the biLM's LM loss (so DeepSpeed's autocast applies)."""

    def __init__(self, bilm: BiLM):
        super().__init__()
        self.bilm = bilm

    def forward(self, char_ids, fwd_targets, bwd_targets, state: Optional[BiLMState] = None):
        return self.bilm.lm_loss(char_ids, fwd_targets, bwd_targets, state)


def state_to_dict(state: Optional[BiLMState]) -> dict[str, torch.Tensor]:
    """The carried (h, c) of both directions as CPU tensors; {} before the first batch."""
    if state is None:
        return {}
    return {"fwd_h": state.fwd.h.cpu(), "fwd_c": state.fwd.c.cpu(), "bwd_h": state.bwd.h.cpu(), "bwd_c": state.bwd.c.cpu()}


def state_from_dict(d: dict[str, torch.Tensor], device) -> Optional[BiLMState]:
    if not d:
        return None
    d = {k: v.to(device) for k, v in d.items()}
    return BiLMState(LSTMState(d["fwd_h"], d["fwd_c"]), LSTMState(d["bwd_h"], d["bwd_c"]))


def rank_seed(seed: int, rank: int) -> int:
    """Dropout seed of rank > 0 (rank 0 keeps ``seed``): ranks must not draw the same masks."""
    return seed + 1_000_003 * rank
