"""When a run stops: the progress bar's budget, and early stopping on held-out perplexity."""
from __future__ import annotations

import math
from typing import Optional

UNLIMITED_STEPS = 1_000_000_000
"""max_steps of a run whose budget is minutes or epochs only."""


class Budget:
    """What the progress bar counts: the budget that ends the run, as the user set it.

    ``--epochs``: passes over the corpus (fractional, from the rows' byte offsets);
    ``--max-minutes`` without a step limit: minutes of training; otherwise optimizer steps.
    The bar's total is then the real budget, so its ETA is honest."""

    def __init__(self, tc):
        if tc.epochs:
            self.unit, self.total = "epoch", float(tc.epochs)
        elif tc.max_minutes is not None and tc.max_steps >= UNLIMITED_STEPS:
            self.unit, self.total = "min", float(tc.max_minutes)
        else:
            self.unit, self.total = "step", tc.max_steps
        self.bar_format = (None if self.unit == "step" else
                           "{l_bar}{bar}| {n:.2f}/{total:.2f} {unit} [{elapsed}<{remaining}{postfix}]")

    def done(self, step: int, batcher, elapsed_s: float) -> float:
        if self.unit == "epoch":
            return batcher.passes_done()
        if self.unit == "min":
            return min(elapsed_s / 60, self.total)
        return step


class EarlyStop:
    """Tracks the best held-out perplexity; ``exhausted`` after ``patience`` evaluations in a
    row without a new best (never, with ``patience`` None). Saved in every checkpoint, so a
    resumed run keeps counting."""

    def __init__(self, patience: Optional[int]):
        self.patience = patience
        self.best = math.inf
        self.best_step: Optional[int] = None
        self.bad_evals = 0

    def update(self, ppl: float, step: int) -> bool:
        """Records an evaluation; True when it is a new best (its checkpoint should be kept)."""
        if ppl < self.best:
            self.best, self.best_step, self.bad_evals = ppl, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def as_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load(self, saved: Optional[dict]) -> None:
        if saved:
            self.best, self.best_step, self.bad_evals = float(saved["best"]), saved["best_step"], int(saved["bad_evals"])
