"""Checkpoints: atomic directories, keep-last-k, and loading that never unpickles code.

Layout: RUN/checkpoints/step-00001000/
    state.pt          model state dict; optimizer state gathered from every ZeRO partition and
                      keyed by parameter name; per rank k the carried LSTM state
                      (``lstm_state_rank{k}``) and RNG state (``rng_cpu_rank{k}``); step
                      (tensors and plain containers only: loaded with ``weights_only=True``)
    data_rank{k}.json rank k's data position (WindowBatcher.state_dict()), one per rank
    meta.json         step, time, world size, effective gradient accumulation, DeepSpeed and
                      resolved run config, and the size and sha256 of every other file (verified
                      on load); written last, so its presence marks a complete checkpoint
Rank 0 writes everything (the other ranks send it their positions and states), so only rank 0
needs the run directory to write. A checkpoint is written into ``.tmp-step-...``, flushed to
disk and renamed into place, so a crash mid-write never leaves a directory that looks
complete. ``latest_valid`` walks back from the newest checkpoint past any that fail to load,
with a warning, so a corrupt latest one costs only the steps since the one before it.

Resuming with another number of ranks re-splits the batch rows (:func:`resplit_data_states`):
positions are then approximate; only the same world size continues exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from elmo_dist.data.corpus import SkipReport, split_regions
from elmo_dist.errors import UsageError
from elmo_dist.utils import WriteFailed, write_failure

PREFIX = "step-"
BEST = "best"
"""The checkpoint of the best held-out perplexity so far (kept beside the newest ones)."""


class CheckpointError(UsageError, RuntimeError):
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


def build_state(model: dict, optimizer: dict, step: int, tokens_seen: int, ranks: list[dict], **extra) -> dict:
    """state.pt's contents: the model and optimizer state dicts, the step, and per rank k (from
    ``ranks[k]``: "lstm", "rng_cpu", optional "rng_cuda" and "targets") the carried LSTM state,
    RNG states and trained-target counts. :func:`rank_state` reads one rank's part back."""
    state = {"model": model, "optimizer": optimizer, "step": step, "tokens_seen": tokens_seen,
             "rng_cpu": ranks[0]["rng_cpu"], **extra}
    for k, r in enumerate(ranks):
        state[f"lstm_state_rank{k}"] = r.get("lstm", {})
        state[f"rng_cpu_rank{k}"] = r["rng_cpu"]
        for key in ("rng_cuda", "targets"):
            if r.get(key) is not None:
                state[f"{key}_rank{k}"] = r[key]
    return state


def rank_state(state: dict, rank: int) -> dict:
    """Rank ``rank``'s part of :func:`build_state`'s dict ("lstm", "rng_cpu", "rng_cuda", "targets";
    None where absent; older checkpoints kept rank 0's RNG state under "rng_cpu" only)."""
    return {"lstm": state.get(f"lstm_state_rank{rank}", {}),
            "rng_cpu": state.get(f"rng_cpu_rank{rank}", state.get("rng_cpu") if rank == 0 else None),
            "rng_cuda": state.get(f"rng_cuda_rank{rank}"), "targets": state.get(f"targets_rank{rank}")}


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], data_states: dict[int, dict],
                    meta: dict[str, Any], keep: int, name: Optional[str] = None) -> Path:
    """Writes checkpoint ``step`` atomically (as ``name`` instead of step-NNNNNNNN if given, e.g.
    :data:`BEST`, replacing the previous one of that name) and prunes to the newest ``keep``."""
    root = checkpoint_dir(run_dir)
    final = root / (name or f"{PREFIX}{step:08d}")
    tmp = root / f".tmp-{final.name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        with open(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
            _sync(f)
        for rank, data_state in data_states.items():
            _write_synced(tmp / f"data_rank{rank}.json", json.dumps(data_state))
        files = {p.name: file_digest(p) for p in sorted(tmp.iterdir())}  # read back: what is on disk
        _write_synced(tmp / "meta.json", json.dumps({"step": step, "time": time.time(), **meta, "files": files},
                                                    indent=2))
    except (OSError, RuntimeError) as e:  # torch's writer raises RuntimeError on a full disk
        shutil.rmtree(tmp, ignore_errors=True)  # give the space back; the older checkpoints stay
        kept = list_checkpoints(run_dir)
        after = (f"the newest complete checkpoint is {kept[-1].name} (--resume continues from it)" if kept
                 else "no checkpoint was written yet")
        raise WriteFailed(f"{write_failure(final, e)}; {after}") from e
    if final.exists():  # re-saving the same step (e.g. stop right after a periodic save)
        shutil.rmtree(final)
    tmp.rename(final)
    _sync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a writer that was killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        _sync(f)


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def file_digest(path: Path) -> dict[str, Any]:
    """{"bytes": size, "sha256": hex digest} of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def verify_files(path: Path, meta: dict[str, Any]) -> None:
    """Checks every file meta.json records (size, then sha256): a flipped byte inside tensor data
    loads without complaint from torch, so only the digest catches it. Checkpoints written before
    digests were recorded have no "files" entry and pass."""
    for name, expected in meta.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint ({name} missing)")
        got = file_digest(file) if file.stat().st_size == expected["bytes"] else {"bytes": file.stat().st_size}
        if got != expected:
            what = "size" if got["bytes"] != expected["bytes"] else "sha256"
            raise CheckpointError(f"{path}: {name} is damaged ({what} differs from the one recorded in meta.json)")


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[int, dict], dict[str, Any]]:
    """Loads one checkpoint directory, its files verified against meta.json's digests; raises
    CheckpointError naming what is wrong."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        verify_files(path, meta)
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        data_states = {int(p.stem[len("data_rank"):]): json.loads(p.read_text(encoding="utf-8"))
                       for p in path.glob("data_rank*.json")}
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: incomplete checkpoint ({Path(e.filename).name} missing)") from None
    except CheckpointError:
        raise
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


def saved_world_size(meta: dict[str, Any], data_states: dict[int, dict]) -> int:
    """Ranks that wrote a checkpoint (older checkpoints without the field: one per data file)."""
    return int(meta.get("world_size", max(len(data_states), 1)))


def resplit_data_states(saved: dict[int, dict], fresh: dict) -> dict:
    """A batcher state for a new row split, from the positions saved under another world size.

    ``saved`` maps each old rank to its ``WindowBatcher.state_dict()``; ``fresh`` is the
    state of the new rank's batcher as constructed (its rows, its ``row_start`` and
    ``total_rows``). Rows own equal byte regions of the corpus, so a different number of rows
    moves every region boundary. Rule: each new row starts at the fraction of its region that
    the old rows overlapping it had read in their current pass (their average, weighted by
    overlap), moved forward to the next line start by the reader; it keeps their lowest pass
    count and starts with no buffered tokens (the caller starts it with zero LSTM state).
    Since every row reads the same number of tokens per step, fractions are nearly equal
    across rows, so no part of the corpus is skipped or repeated in the current pass beyond
    a line or two per row boundary. Skip counts of all old ranks go to new rank 0.
    """
    old_rows = []  # (start, end, offset, passes)
    for rank in sorted(saved):
        s = saved[rank]
        if s["total_bytes"] != fresh["total_bytes"]:
            raise CheckpointError(f"rank {rank}'s saved position is for a corpus of {s['total_bytes']} bytes; this one "
                                  f"has {fresh['total_bytes']}: the corpus files changed")
        regions = split_regions(s["total_bytes"], s["total_rows"])[s["row_start"]:s["row_start"] + s["batch_size"]]
        old_rows += [(a, b, int(r["offset"]), int(r["passes"])) for (a, b), r in zip(regions, s["rows"])]
    total = sum(b - a for a, b, _, _ in old_rows)
    if total != fresh["total_bytes"]:
        raise CheckpointError(f"the saved data positions cover {total} of {fresh['total_bytes']} corpus bytes: "
                              "a rank's data_rank*.json is missing from the checkpoint")
    new_regions = split_regions(fresh["total_bytes"], fresh["total_rows"])
    rows = []
    for start, end in new_regions[fresh["row_start"]:fresh["row_start"] + fresh["batch_size"]]:
        weight = frac = 0.0
        passes = None
        for a, b, offset, p in old_rows:
            overlap = min(b, end) - max(a, start)
            if overlap <= 0 and not (a == b and start <= a < end):
                continue
            w = max(overlap, 1)
            frac += w * (min(max(offset - a, 0), b - a) / max(b - a, 1))
            weight += w
            passes = p if passes is None else min(passes, p)
        position = start + round((frac / weight if weight else 0.0) * (end - start))
        rows.append({"offset": position, "buffer": [], "prev": None, "passes": passes or 0, "done": False})
    report = SkipReport()
    if fresh["row_start"] == 0:
        for s in saved.values():
            report = report.merge(SkipReport.from_dict(s["report"]))
    return {**fresh, "rows": rows, "report": report.as_dict()}
