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
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from elmo_dist.data import SkipReport, Vocabulary, WindowBatcher
from elmo_dist.model import BiLM, BiLMState, LSTMState
from elmo_dist.utils import check_writable_dir

from . import checkpoint as ckpt
from .config import RunConfig, apply_overrides
from .distributed import (all_reduce_sum, any_rank, barrier, broadcast_from_main, build_optimizer, config_precision,
                          deepspeed_config, gather_optimizer_state, gather_to_main, init_process_group,
                          initialize_engine, load_optimizer_state, load_user_config, world, zero_stage)
from .evaluate import evaluate_perplexity
from .faults import (DEFAULT_COMM_TIMEOUT_S, RankFailure, RunInterrupted, StopSignals, Watchdog,
                     describe_collective_error)
from .metrics import MetricsLogger, abort_loggers, perplexity, read_metrics
from .rundir import (build_vocabulary, default_device, init_model, load_run_config, make_corpus, resolve_data,
                     vocab_path, write_json)
from .schedule import learning_rate

DEEPSPEED_FILE = "deepspeed.json"
"""The user's DeepSpeed config (--deepspeed-config), kept in the run directory for --resume."""


class LossDiverged(FloatingPointError):
    """The training loss became NaN or infinite. The run stops at once: the weights of that
    step are never checkpointed, so the newest checkpoint is the last good one."""

    def __init__(self, loss: float, step: int, last_checkpoint: Optional[int], lr: float):
        kept = (f"the last good checkpoint is step {last_checkpoint}" if last_checkpoint is not None
                else "no checkpoint was written")
        super().__init__(f"training diverged: the loss became {loss} at step {step}; {kept}; start a new run with "
                         f"a lower --lr (this run's is {lr:g}) or a --grad-clip")


class LMObjective(nn.Module):
    """What the engine wraps: forward = the biLM's LM loss (so DeepSpeed's autocast applies)."""

    def __init__(self, bilm: BiLM):
        super().__init__()
        self.bilm = bilm

    def forward(self, char_ids, fwd_targets, bwd_targets, state: Optional[BiLMState] = None):
        return self.bilm.lm_loss(char_ids, fwd_targets, bwd_targets, state)


def _state_to_dict(state: Optional[BiLMState]) -> dict[str, torch.Tensor]:
    if state is None:
        return {}
    return {"fwd_h": state.fwd.h.cpu(), "fwd_c": state.fwd.c.cpu(), "bwd_h": state.bwd.h.cpu(), "bwd_c": state.bwd.c.cpu()}


def _state_from_dict(d: dict[str, torch.Tensor], device) -> Optional[BiLMState]:
    if not d:
        return None
    d = {k: v.to(device) for k, v in d.items()}
    return BiLMState(LSTMState(d["fwd_h"], d["fwd_c"]), LSTMState(d["bwd_h"], d["bwd_c"]))


def _rank_seed(seed: int, rank: int) -> int:
    """Dropout seed of rank > 0 (rank 0 keeps ``seed``): ranks must not draw the same masks."""
    return seed + 1_000_003 * rank


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


def _set_lr(optimizer, cfg: RunConfig, step: int) -> float:
    o = cfg.optim
    lr = learning_rate(o.lr, step, o.schedule, o.warmup_steps, cfg.train.max_steps, o.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """After a resume from ``step``, drop records of steps that will be trained again."""
    rows = read_metrics(run_dir)
    kept = [r for r in rows if r.get("step", 0) <= step or r.get("kind") == "run"]
    if len(kept) != len(rows):
        import json
        from elmo_dist.utils import atomic_write_text
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def _resume_accumulation(tc, saved_world: int, saved_accum: int, world_size: int, is_main: bool) -> int:
    """Gradient accumulation that keeps the saved global batch on ``world_size`` ranks, if it divides."""
    if saved_world == world_size:
        return saved_accum
    rows = saved_world * saved_accum * tc.batch_size
    if rows % (world_size * tc.batch_size) == 0:
        accum = rows // (world_size * tc.batch_size)
        if is_main and accum != saved_accum:
            print(f"resuming a {saved_world}-rank run on {world_size}: gradient accumulation {saved_accum} -> {accum} "
                  f"keeps the global batch of {rows} rows (micro-batch {tc.batch_size} x accumulation {accum} x "
                  f"world size {world_size})")
        return accum
    if is_main:
        warnings.warn(f"resuming a {saved_world}-rank run on {world_size} ranks changes the global batch from {rows} "
                      f"to {world_size * saved_accum * tc.batch_size} rows: {rows} is not a multiple of micro-batch "
                      f"{tc.batch_size} x world size {world_size}", stacklevel=4)
    return saved_accum


def pretrain(cfg: Optional[RunConfig], run_dir: Path, resume: bool = False, progress: bool = True,
             vocab_file: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None,
             deepspeed_config_file: Optional[Path] = None,
             comm_timeout_s: float = DEFAULT_COMM_TIMEOUT_S) -> dict[str, Any]:
    """Trains (or resumes) the run in ``run_dir``; returns the summary it also writes to summary.json.

    Every rank of a launch calls this. ``overrides`` (resume only) replaces TrainConfig fields
    such as max_steps or max_minutes. ``deepspeed_config_file`` adds DeepSpeed settings (ZeRO
    stage, bf16 autocast; launch/ds_*.json); a resume without one reuses the run's. Any rank
    waiting longer than ``comm_timeout_s`` for the others ends the job (faults.py).
    """
    run_dir = Path(run_dir)
    rank, world_size = world()
    is_main = rank == 0
    user_ds = load_user_config(deepspeed_config_file) if deepspeed_config_file is not None else None
    report = None
    if is_main:  # only rank 0 writes the run directory; a full or read-only disk fails here, not at step 500
        check_writable_dir(run_dir, "--run-dir")
    if resume == "auto" and cfg is None and not ckpt.list_checkpoints(run_dir):
        raise ValueError(f"{run_dir} holds no checkpoint to resume, and no configuration to start from was given")
    resume = resolve_resume(resume, run_dir)
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
    position = _Position()
    try:
        watchdog.beat("initialising the process group")
        init_process_group(comm_timeout_s)
        if not resume:
            if is_main:
                _write_run_files(cfg, vocab, report, run_dir)
            # config.json is how a run directory is recognised: no rank may write it before
            # every rank has checked that run_dir was free (the rendezvous above).
        if is_main and user_ds is not None and deepspeed_config_file is not None:
            write_json(run_dir / DEEPSPEED_FILE, user_ds)
        return _train(cfg, vocab, run_dir, resume, progress, user_ds, ds_source, watchdog, position, rank, world_size)
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


@dataclasses.dataclass
class _Position:
    """Where training is, for the message when another rank is lost."""

    step: int = 0
    last_checkpoint: Optional[int] = None


def _train(cfg: RunConfig, vocab: Vocabulary, run_dir: Path, resume: bool, progress: bool,
           user_ds: Optional[dict], ds_source: str, watchdog: Watchdog, position: _Position, rank: int,
           world_size: int) -> dict[str, Any]:
    is_main = rank == 0
    device = default_device()

    found = None
    if resume:
        watchdog.beat("loading the checkpoint")
        # Rank 0 picks the checkpoint (warning about corrupt newer ones); all ranks load that one.
        hit = ckpt.latest_valid(run_dir) if is_main else None
        chosen = broadcast_from_main(None if hit is None else str(hit[0]))
        if chosen is None:
            raise ckpt.CheckpointError(f"{run_dir}: --resume found no loadable checkpoint in {ckpt.checkpoint_dir(run_dir)}")
        found = hit if is_main else (Path(chosen), *ckpt.load_checkpoint(Path(chosen)))
        _, saved, data_states, meta = found
        saved_world = ckpt.saved_world_size(meta, data_states)
        accum = _resume_accumulation(cfg.train, saved_world, int(meta.get("grad_accum_steps", cfg.train.grad_accum_steps)),
                                     world_size, is_main)
        cfg.train = dataclasses.replace(cfg.train, grad_accum_steps=accum)
    tc = cfg.train
    ds_cfg = deepspeed_config(tc, cfg.optim, user_ds, ds_source)  # validates the global batch

    watchdog.beat("building the model and the DeepSpeed engine")
    bilm = init_model(cfg.model, tc.seed).to(device)  # seeds the global RNG, as dropout expects
    if found is not None:
        # Before the engine exists: ZeRO copies these weights into its fp32 partitions.
        bilm.load_state_dict(found[1]["model"])
    engine = initialize_engine(LMObjective(bilm), build_optimizer(bilm.parameters(), cfg.optim), ds_cfg)
    optimizer = engine.optimizer  # under ZeRO, the partitioned optimizer that owns lr and state
    if rank:
        torch.manual_seed(_rank_seed(tc.seed, rank))

    train_corpus = make_corpus(cfg.data.train, cfg.data)
    batcher = WindowBatcher(train_corpus, vocab, tc.batch_size, tc.num_steps, row_start=rank * tc.batch_size,
                            total_rows=world_size * tc.batch_size, max_passes=tc.epochs)
    valid_corpus = make_corpus(cfg.data.valid, cfg.data) if cfg.data.valid else None
    step, tokens_seen, state = 0, 0, None
    targets = torch.zeros(2, dtype=torch.float64)  # this rank's trained targets: forward, backward

    if found is not None:
        path, saved, data_states, meta = found
        load_optimizer_state(engine, bilm, saved["optimizer"])
        rng = saved.get(f"rng_cpu_rank{rank}", saved["rng_cpu"] if rank == 0 else None)
        if rng is not None:
            torch.set_rng_state(rng)
        if device.type == "cuda" and f"rng_cuda_rank{rank}" in saved:
            torch.cuda.set_rng_state(saved[f"rng_cuda_rank{rank}"])
        if saved_world == world_size:
            if rank not in data_states:
                raise ckpt.CheckpointError(f"{path}: no data position for rank {rank}")
            batcher.load_state_dict(data_states[rank])
            state = _state_from_dict(saved.get(f"lstm_state_rank{rank}", {}), device)
        else:
            batcher.load_state_dict(ckpt.resplit_data_states(data_states, batcher.state_dict()))
            if is_main:
                warnings.warn(f"{path} was written by {saved_world} ranks and is resumed on {world_size}: batch rows are "
                              "re-split, each starting at the matching fraction of its corpus region with zero LSTM "
                              f"state, so the data order differs from an uninterrupted run; resume on {saved_world} "
                              "ranks for an exact continuation", stacklevel=3)
        step, tokens_seen = int(saved["step"]), int(saved.get("tokens_seen", 0))
        if saved_world == world_size and f"targets_rank{rank}" in saved:
            targets = saved[f"targets_rank{rank}"].clone()
        position.step = position.last_checkpoint = step
        if is_main:
            _truncate_metrics(run_dir, step)
            print(f"resumed from {path} at step {step}")

    logger = MetricsLogger(run_dir, cfg.to_dict(), tc.wandb_mode, tc.wandb_project, enabled=is_main, resume=resume)
    autocast = torch.bfloat16 if tc.precision == "bf16" else None

    def run_eval(max_batches):
        if valid_corpus is None:
            return None
        watchdog.pause("evaluating")  # bounded by the process-group timeout of its all-reduce
        result = evaluate_perplexity(bilm, valid_corpus, vocab, tc.batch_size, tc.num_steps, max_batches,
                                     progress=progress and is_main, device=device, row_start=rank * tc.batch_size,
                                     total_rows=world_size * tc.batch_size, autocast_dtype=autocast)
        watchdog.beat(f"training after the evaluation at step {step}")
        return result

    def save(reason: str):
        watchdog.beat(f"writing the checkpoint at step {step}")
        optim_state = gather_optimizer_state(engine, bilm)  # collective under ZeRO
        mine = {"data": batcher.state_dict(), "lstm": _state_to_dict(state), "rng_cpu": torch.get_rng_state(),
                "targets": targets.clone()}
        if device.type == "cuda":
            mine["rng_cuda"] = torch.cuda.get_rng_state()
        ranks = gather_to_main(mine)
        if is_main:
            saved = {"model": bilm.state_dict(), "optimizer": optim_state, "step": step, "tokens_seen": tokens_seen,
                     "rng_cpu": ranks[0]["rng_cpu"]}
            for k, r in enumerate(ranks):
                saved[f"lstm_state_rank{k}"] = r["lstm"]
                saved[f"rng_cpu_rank{k}"] = r["rng_cpu"]
                saved[f"targets_rank{k}"] = r["targets"]
                if "rng_cuda" in r:
                    saved[f"rng_cuda_rank{k}"] = r["rng_cuda"]
            meta = {"reason": reason, "config": cfg.to_dict(), "world_size": world_size,
                    "grad_accum_steps": tc.grad_accum_steps, "zero_stage": zero_stage(ds_cfg), "deepspeed": ds_cfg}
            ckpt.save_checkpoint(run_dir, step, saved, {k: r["data"] for k, r in enumerate(ranks)}, meta,
                                 tc.keep_checkpoints)
        barrier()  # a checkpoint counts once rank 0 has renamed it into place
        position.last_checkpoint = step

    if not resume and valid_corpus is not None:
        untrained = run_eval(tc.eval_max_batches)  # every rank: the sums are all-reduced
        logger.log({"kind": "eval", "step": 0, **untrained})
        if is_main:
            print(f"untrained model: valid ppl fwd {untrained['ppl_fwd']:.1f} bwd {untrained['ppl_bwd']:.1f}")

    start = time.time()
    window = {"nll_f": 0.0, "n_f": 0, "nll_b": 0.0, "n_b": 0, "tokens": 0, "t0": time.time()}
    budget = Budget(tc, step)
    bar = tqdm(total=budget.total, initial=budget.done(step, batcher, 0.0), desc="pretrain", unit=budget.unit,
               disable=not (progress and is_main), bar_format=budget.bar_format)
    stop_reason = "max_steps"
    signals = StopSignals()
    try:
        while step < tc.max_steps:
            lr = _set_lr(optimizer, cfg, step)
            for micro in range(tc.grad_accum_steps):
                watchdog.beat(f"training step {step + 1} (micro-batch {micro + 1} of {tc.grad_accum_steps})")
                batch = (batcher.next_batch() or batcher.padding_batch()).to(device)  # padding: --epochs done here
                out, new_state = engine(batch.char_ids, batch.fwd_targets, batch.bwd_targets, state)
                engine.backward(out.loss)
                engine.step()
                state = new_state.detach()
                n_tok = int(batch.mask.sum())
                targets += torch.tensor([float(out.fwd_count), float(out.bwd_count)], dtype=torch.float64)
                # Rows pad only once --epochs is reached; until then every rank reads as many tokens.
                tokens_seen += (int(all_reduce_sum(torch.tensor([n_tok], dtype=torch.float64), device).item())
                                if tc.epochs else n_tok * world_size)
                window["tokens"] += n_tok
                window["nll_f"] += out.fwd_nll.item()
                window["n_f"] += int(out.fwd_count)
                window["nll_b"] += out.bwd_nll.item()
                window["n_b"] += int(out.bwd_count)
            step += 1
            position.step = step
            if not math.isfinite(out.loss.item()):
                raise LossDiverged(out.loss.item(), step, position.last_checkpoint, cfg.optim.lr)
            bar.update(budget.done(step, batcher, time.time() - start) - bar.n)
            if step % tc.log_every == 0 or step == tc.max_steps:
                sums = all_reduce_sum(torch.tensor([window[k] for k in ("nll_f", "n_f", "nll_b", "n_b", "tokens")],
                                                   dtype=torch.float64), device)
                nll_f, n_f, nll_b, n_b, tokens = sums.tolist()
                dt = max(time.time() - window["t0"], 1e-9)
                rec = {"kind": "train", "step": step, "lr": lr, "epoch": batcher.epoch,
                       "loss": 0.5 * (nll_f / max(n_f, 1) + nll_b / max(n_b, 1)),
                       "ppl_fwd": perplexity(nll_f, n_f), "ppl_bwd": perplexity(nll_b, n_b),
                       "tokens_per_s": tokens / dt, "tokens_seen": tokens_seen}
                logger.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", ppl_fwd=f"{rec['ppl_fwd']:.1f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                window = {"nll_f": 0.0, "n_f": 0, "nll_b": 0.0, "n_b": 0, "tokens": 0, "t0": time.time()}
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.max_steps:
                result = run_eval(tc.eval_max_batches)
                if result is not None:
                    logger.log({"kind": "eval", "step": step, **result})
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                save("periodic")
            # Every rank must stop at the same step: rank clocks and signals differ, so they vote.
            out_of_time = tc.max_minutes is not None and time.time() - start > 60 * tc.max_minutes
            if any_rank(out_of_time or signals.received is not None, device):
                stop_reason = f"signal ({signals.received})" if signals.received else "max_minutes"
                break
            if tc.epochs and not any_rank(not batcher.finished, device):
                stop_reason = "epochs"
                break
    except KeyboardInterrupt:
        signals.restore()
        bar.close()
        if world_size == 1:  # several ranks are interrupted at different points: no collective save
            save("interrupted")
            _write_interrupted_summary(run_dir, "SIGINT", step, tokens_seen, start, world_size)
            print(f"interrupted: checkpoint at step {step} written; continue with --resume auto")
        logger.close()
        raise
    signals.restore()
    bar.close()
    save(stop_reason)
    if signals.received is not None:
        logger.close()
        if is_main:
            _write_interrupted_summary(run_dir, signals.received, step, tokens_seen, start, world_size)
        raise RunInterrupted(signals.received, step, run_dir)
    reports = gather_to_main(batcher.report.as_dict())
    trained = all_reduce_sum(targets, device).tolist()
    summary: dict[str, Any] = {"status": "finished", "step": step, "stop_reason": stop_reason,
                               "tokens_seen": tokens_seen, "train_minutes": (time.time() - start) / 60,
                               "world_size": world_size, "epochs": batcher.passes_done() if tc.epochs else None,
                               "targets_trained": {"fwd": int(trained[0]), "bwd": int(trained[1])}}
    if is_main:
        merged = SkipReport()
        for r in reports:
            merged.merge(SkipReport.from_dict(r))
        summary["data_report"] = merged.as_dict()
    final = run_eval(None)
    if final is not None:
        logger.log({"kind": "eval", "step": step, "final": True, **final})
        summary["valid"] = final
    evals = [r for r in read_metrics(run_dir, "eval") if r.get("step") == 0] if is_main else []
    if evals:
        summary["untrained_valid"] = {k: evals[0][k] for k in ("ppl_fwd", "ppl_bwd", "ppl")}
    if is_main:
        write_json(run_dir / "summary.json", summary)
    logger.close()
    return summary


class Budget:
    """What the progress bar counts: the budget that ends the run first, as the user set it.

    ``--epochs``: passes over the corpus (fractional, from the rows' byte offsets);
    ``--max-minutes`` without a step limit: minutes of training; otherwise optimizer steps.
    The bar's total is then the real budget, so its ETA is honest."""

    def __init__(self, tc, step: int):
        self.tc = tc
        if tc.epochs:
            self.unit, self.total = "epoch", float(tc.epochs)
        elif tc.max_minutes is not None and tc.max_steps >= 1_000_000:
            self.unit, self.total = "min", float(tc.max_minutes)
        else:
            self.unit, self.total = "step", tc.max_steps
        self.bar_format = None if self.unit == "step" else "{l_bar}{bar}| {n:.2f}/{total:.2f} {unit} [{elapsed}<{remaining}{postfix}]"

    def done(self, step: int, batcher, elapsed_s: float) -> float:
        if self.unit == "epoch":
            return batcher.passes_done()
        if self.unit == "min":
            return min(elapsed_s / 60, self.total)
        return step


def _write_interrupted_summary(run_dir: Path, signal_name: str, step: int, tokens_seen: int, start: float,
                               world_size: int) -> None:
    """summary.json of a run stopped by a signal: what happened and the command that continues it."""
    write_json(run_dir / "summary.json", {
        "status": "interrupted", "signal": signal_name, "step": step, "stop_reason": f"signal ({signal_name})",
        "tokens_seen": tokens_seen, "train_minutes": (time.time() - start) / 60, "world_size": world_size,
        "resume_with": f"elmo-dist pretrain --run-dir {run_dir} --resume auto"})


def _is_collective_error(e: RuntimeError) -> bool:
    """A failed or timed-out collective (gloo and NCCL raise RuntimeError subclasses)."""
    import torch.distributed as dist
    if isinstance(e, (ckpt.CheckpointError, RankFailure)):
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return any(s in text for s in ("gloo", "nccl", "connection closed", "connection reset"))
