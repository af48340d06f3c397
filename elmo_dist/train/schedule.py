"""Learning-rate schedules: linear warm-up, then constant, cosine or inverse-square-root decay.

With peak ``lr``, ``w`` warm-up steps and optimizer step ``s`` (0-based; the rate used *for*
step s + 1):

    warm-up (s < w):  lr * (s + 1) / w
    constant:         lr
    cosine:           lr * (r + (1 - r) * (1 + cos(pi * t)) / 2),  t = (s - w) / (S - w) in [0, 1]
    inverse-sqrt:     lr * sqrt(max(w, 1) / (s + 1))

where ``S`` is the run's step budget (``--max-steps``) and ``r`` the floor ``min_lr_ratio``.
Cosine is the schedule of most recent LM pretraining; inverse-sqrt that of the Transformer
paper (Vaswani et al., 2017), which needs no step budget; constant is bilm-tf's (Adagrad 0.2).
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "inverse-sqrt")


def learning_rate(lr: float, step: int, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int | None = None, min_lr_ratio: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` + 1 (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        if not total_steps or total_steps <= warmup_steps:
            raise ValueError(f"the cosine schedule needs a step budget (--max-steps) above --warmup-steps "
                             f"({warmup_steps}); got {total_steps}")
        t = min(max(step - warmup_steps, 0) / (total_steps - warmup_steps), 1.0)
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if schedule == "inverse-sqrt":
        return lr * math.sqrt(max(warmup_steps, 1) / (step + 1))
    return lr
