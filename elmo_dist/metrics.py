"""Metrics sinks: a local JSON-lines file (always) and wandb (offline unless asked otherwise).

Only rank 0 logs. wandb is imported lazily and defaults to offline so that no run, and no test,
reaches the network unless the user sets wandb_mode=online.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional


def perplexity(nll_sum: float, count: float) -> float:
    """exp(mean negative log-likelihood); inf when the mean overflows, nan with no tokens."""
    if count <= 0:
        return float("nan")
    mean = nll_sum / count
    return math.exp(mean) if mean < 700 else float("inf")


WANDB_ID_FILE = "wandb_id.txt"
"""The W&B run id of a run directory, so that every resume logs into the same W&B run."""


class MetricsLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], wandb_mode: str = "offline",
                 project: str = "elmo-dist", enabled: bool = True, resume: bool = False):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        if not enabled:
            return
        if wandb_mode != "disabled":
            os.environ["WANDB_MODE"] = wandb_mode  # the run's setting beats the environment's
            os.environ.setdefault("WANDB_SILENT", "true")
            id_file = Path(run_dir) / WANDB_ID_FILE
            run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
            try:
                import wandb
                _ACTIVE.add(self)
                # A resume continues the same W&B run: its id is kept in the run directory.
                self._wandb = wandb.init(project=project, dir=str(run_dir), config=config, mode=wandb_mode,
                                         name=Path(run_dir).name, id=run_id, resume="allow" if run_id else None,
                                         reinit="finish_previous")
                if run_id is None:
                    from elmo_dist.utils import atomic_write_text
                    atomic_write_text(id_file, self._wandb.id + "\n")
            except Exception as e:  # logging must never kill a training run
                print(f"warning: wandb disabled ({type(e).__name__}: {e}); metrics still go to {self.path}")
                self._wandb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
        except OSError as e:
            from elmo_dist.utils import write_failure
            raise write_failure(self.path, e) from e
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                            step=int(record.get("step", 0)))

    def close(self, failed: bool = False) -> None:
        """Finishes the wandb run. ``failed``: the run is ending on an error, perhaps a full or
        read-only disk under the run directory, where wandb keeps its files: finish it quietly,
        so that its own failing log writes do not bury the one-line error under tracebacks."""
        _ACTIVE.discard(self)
        if self._wandb is None:
            return
        run, self._wandb = self._wandb, None
        if not failed:
            run.finish()
            return
        import logging
        logging.raiseExceptions = False  # wandb's log handlers write into the run directory
        try:
            run.finish(exit_code=1, quiet=True)
        except Exception:  # noqa: BLE001 - the error being reported matters more
            pass


_ACTIVE: set = set()
"""Loggers with an open wandb run; :func:`abort_loggers` closes them when a run fails."""


def abort_loggers() -> None:
    """Closes every open logger as failed (see :meth:`MetricsLogger.close`)."""
    for logger in list(_ACTIVE):
        logger.close(failed=True)


def read_metrics(run_dir: Path, kind: Optional[str] = None) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
