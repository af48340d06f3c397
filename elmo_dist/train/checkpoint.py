"""Checkpoints: atomic directories, keep-last-k, and loading that never unpickles code.

Layout: RUN/checkpoints/step-00001000/
    state.pt          model + optimizer state dicts, carried LSTM state, RNG states, step
                      (tensors and plain containers only: loaded with ``weights_only=True``)
    data_rank{k}.json each rank's data position (WindowBatcher.state_dict())
    meta.json         step, time, resolved config; written last, so its presence marks a
                      complete checkpoint
A checkpoint is written into ``.tmp-step-...`` and renamed into place, so a crash mid-write
never leaves a directory that looks complete. ``latest_valid`` walks back from the newest
checkpoint past any that fail to load, with a warning, so a corrupt latest one costs only the
steps since the one before it.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from elmo_dist.utils import atomic_write_text

PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt (the message names it and what to do)."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (with meta.json), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], data_states: dict[int, dict],
                    meta: dict[str, Any], keep: int) -> Path:
    """Writes checkpoint ``step`` atomically and prunes to the newest ``keep``."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    for rank, data_state in data_states.items():
        (tmp / f"data_rank{rank}.json").write_text(json.dumps(data_state), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "time": time.time(), **meta}, indent=2), encoding="utf-8")
    if final.exists():  # re-saving the same step (e.g. stop right after a periodic save)
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[int, dict], dict[str, Any]]:
    """Loads one checkpoint directory; raises CheckpointError naming what is wrong."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        data_states = {int(p.stem[len("data_rank"):]): json.loads(p.read_text(encoding="utf-8"))
                       for p in path.glob("data_rank*.json")}
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({Path(e.filename).name} missing)") from None
    except Exception as e:  # truncated zip, bad JSON, non-tensor pickle content...
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    for key in ("model", "optimizer", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint state.pt has no {key!r} entry")
    return state, data_states, meta


def latest_valid(run_dir: Path) -> Optional[tuple[Path, dict, dict, dict]]:
    """The newest checkpoint that loads, warning about each newer one that does not."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return (path, *load_checkpoint(path))
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}; falling back to the previous one", stacklevel=2)
    return None


def write_meta_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
