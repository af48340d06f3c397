"""Pretraining: the biLM under a DeepSpeed engine, stateful windows, checkpoints, metrics.

One optimizer step = ``grad_accum_steps`` micro-batches of ``batch_size`` rows x ``num_steps``
tokens on every rank: global batch = micro-batch x accumulation x world size rows. Each row's
LSTM state is carried (detached) from one micro-batch to the next: truncated backpropagation
through time over a continuous stream, the bilm-tf recipe.

Data parallel: the corpus (all files, concatenated) is cut into ``world x batch_size`` equal
byte regions, one per row; rank k owns rows ``k*B .. k*B+B-1``, a contiguous, disjoint slice of
the corpus: whole shard files when there are many more files than ranks, windows of one file
otherwise. DeepSpeed averages the gradients over ranks, so a step optimises the mean of the
per-rank mean losses. Evaluation and logged metrics are summed over ranks; only rank 0 writes
logs and run files, and it writes every rank's data position into each checkpoint.

Resume: a checkpoint holds the model, the optimizer state (gathered across ZeRO partitions),
each rank's carried LSTM state, RNG state and batcher position, so N steps + resume + N steps
reproduces 2N uninterrupted steps on the same number of ranks. With another number of ranks
the rows are re-split (checkpoint.resplit_data_states: approximate positions, zero LSTM state,
with a warning) and gradient accumulation is scaled to keep the global batch when it divides.

Faults: see faults.py. Every collective and every training step is bounded by
``comm_timeout_s``; a rank that dies or hangs ends the job, and --resume continues from the
last checkpoint.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from elmo_dist.data import Vocabulary
from elmo_dist.utils import atomic_write_json as write_json, check_writable_dir

from . import checkpoint as ckpt
from .config import RunConfig, apply_overrides
from .distributed import config_precision, init_process_group, load_user_config, world
from .faults import DEFAULT_COMM_TIMEOUT_S, RankFailure, Watchdog, describe_collective_error
from elmo_dist.metrics import abort_loggers
from .rundir import build_vocabulary, load_run_config, resolve_data, vocab_path
from .trainer import Position, Trainer

DEEPSPEED_FILE = "deepspeed.json"
"""The user's DeepSpeed config (--deepspeed-config), kept in the run directory for --resume."""

RUN_FILES_OF_AN_ATTEMPT = ("metrics.jsonl", "summary.json", "data_report.json", DEEPSPEED_FILE)
"""What a start that never reached a checkpoint may have left; a new start replaces them."""


def resolve_resume(resume, run_dir: Path) -> bool:
    """``resume`` as a bool: True/False as given; "auto" resumes when the run directory holds a
    complete checkpoint and starts fresh otherwise (what a restarted or requeued job wants).
    Every rank decides alone, from the run directory that resuming reads anyway."""
    if resume == "auto":
        return bool(ckpt.list_checkpoints(run_dir))
    if resume not in (True, False):
        raise ValueError(f"resume must be True, False or 'auto'; got {resume!r}")
    return resume


def _new_run(cfg: RunConfig, run_dir: Path, vocab_file: Optional[Path], progress: bool):
    """Checks that run_dir holds no trained run, resolves the data and the vocabulary; writes
    nothing. A run directory whose start failed or was interrupted before its first checkpoint
    (config.json, no checkpoint) may be started again with the same command line."""
    if (Path(run_dir) / "config.json").exists() and ckpt.list_checkpoints(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume (or --resume auto) to continue it "
                              "or choose another --run-dir")
    data = resolve_data(cfg.data)
    if vocab_file is not None:
        vocab, report = Vocabulary.from_file(vocab_file), None
    else:
        vocab, report = build_vocabulary(data, progress=progress)
    return RunConfig(cfg.model.replace(vocab_size=len(vocab)), data, cfg.optim, cfg.train), vocab, report


def _write_run_files(cfg: RunConfig, vocab: Vocabulary, report, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "config.json").exists():
        print(f"{run_dir}: a start that wrote no checkpoint was left here; starting the run over")
        for name in RUN_FILES_OF_AN_ATTEMPT:
            (run_dir / name).unlink(missing_ok=True)
    vocab.save(vocab_path(run_dir))
    if report is not None:
        write_json(run_dir / "data_report.json", report.as_dict())
        if report.lines_skipped:
            print(f"vocabulary pass: {report.summary()}")
    cfg.save(run_dir / "config.json")


def prepare_run(cfg: RunConfig, run_dir: Path, vocab_file: Optional[Path] = None,
                progress: bool = True) -> tuple[RunConfig, Vocabulary]:
    """Resolves the data, writes config.json and vocab.txt into a new run directory (one process)."""
    run_dir = Path(run_dir)
    cfg, vocab, report = _new_run(cfg, run_dir, vocab_file, progress)
    _write_run_files(cfg, vocab, report, run_dir)
    return cfg, vocab


def pretrain(cfg: Optional[RunConfig], run_dir: Path, resume: bool | str = False, progress: bool = True,
             vocab_file: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None,
             deepspeed_config_file: Optional[Path] = None,
             comm_timeout_s: float = DEFAULT_COMM_TIMEOUT_S) -> dict[str, Any]:
    """Trains (or resumes) the run in ``run_dir``; returns the summary it also writes to summary.json.

    Every rank of a launch calls this. ``resume``: False (a new run), True, or "auto" (resume if
    a checkpoint exists, else start ``cfg``). ``overrides`` (resume only) sets configuration
    fields, ``section.field`` or a bare TrainConfig field (``max_steps``). ``deepspeed_config_file``
    adds DeepSpeed settings (ZeRO stage, bf16 autocast; launch/ds_*.json); a resume without one
    reuses the run's. Any rank waiting longer than ``comm_timeout_s`` for the others ends the
    job (faults.py).
    """
    run_dir = Path(run_dir)
    rank, world_size = world()
    is_main = rank == 0
    if is_main:  # only rank 0 writes the run directory; a full or read-only disk fails here, not at step 500
        check_writable_dir(run_dir, "--run-dir")
    if resume == "auto" and cfg is None and not ckpt.list_checkpoints(run_dir):
        raise ValueError(f"{run_dir} holds no checkpoint to resume, and no configuration to start from was given")
    resume = resolve_resume(resume, run_dir)
    user_ds = load_user_config(deepspeed_config_file) if deepspeed_config_file is not None else None
    report = None
    if resume:
        cfg = apply_overrides(load_run_config(run_dir), overrides or {})
        vocab = Vocabulary.from_file(vocab_path(run_dir))
        if user_ds is None and (run_dir / DEEPSPEED_FILE).is_file():
            user_ds = load_user_config(run_dir / DEEPSPEED_FILE)
    else:
        cfg, vocab, report = _new_run(cfg, run_dir, vocab_file, progress and is_main)
    if config_precision(user_ds) == "bf16" and cfg.train.precision != "bf16":
        cfg.train = dataclasses.replace(cfg.train, precision="bf16")
    ds_source = str(deepspeed_config_file or run_dir / DEEPSPEED_FILE)
    watchdog = Watchdog(comm_timeout_s, rank, enabled=world_size > 1)  # one process has nobody to wait for
    position = Position()
    try:
        watchdog.beat("initialising the process group")
        init_process_group(comm_timeout_s)
        # config.json is how a run directory is recognised: no rank may write it before every
        # rank has checked that run_dir was free (the rendezvous above).
        if not resume and is_main:
            _write_run_files(cfg, vocab, report, run_dir)
        if is_main and user_ds is not None and deepspeed_config_file is not None:
            write_json(run_dir / DEEPSPEED_FILE, user_ds)
        trainer = Trainer(cfg, vocab, run_dir, resume, progress, user_ds, ds_source, watchdog, position, rank,
                          world_size)
        return trainer.run()
    except RuntimeError as e:
        abort_loggers()
        if world_size > 1 and _is_collective_error(e):
            raise RankFailure(describe_collective_error(e, rank, position.step, position.last_checkpoint)) from e
        raise
    except BaseException:
        abort_loggers()
        raise
    finally:
        watchdog.stop()


def _is_collective_error(e: RuntimeError) -> bool:
    """A failed or timed-out collective (gloo and NCCL raise RuntimeError subclasses)."""
    import torch.distributed as dist
    if isinstance(e, (ckpt.CheckpointError, RankFailure)):
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return any(s in text for s in ("gloo", "nccl", "connection closed", "connection reset"))
