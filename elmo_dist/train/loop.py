"""Pretraining: the biLM under a DeepSpeed engine, stateful windows, checkpoints, metrics.

One optimizer step = ``grad_accum_steps`` micro-batches of ``batch_size`` rows x ``num_steps``
tokens on every rank. Each row's LSTM state is carried (detached) from one micro-batch to the
next: truncated backpropagation through time over a continuous stream, the bilm-tf recipe.

Exact resume: a checkpoint holds the model, optimizer, carried LSTM state, torch RNG state and
the batcher position, so N steps + resume + N steps reproduces 2N uninterrupted steps.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from elmo_dist.data import Vocabulary, WindowBatcher
from elmo_dist.model import BiLM, BiLMState, LSTMState

from . import checkpoint as ckpt
from .config import RunConfig
from .distributed import build_optimizer, deepspeed_config, initialize_engine, world
from .evaluate import evaluate_perplexity
from .metrics import MetricsLogger, perplexity, read_metrics
from .rundir import (build_vocabulary, default_device, load_run_config, make_corpus, resolve_data,
                     vocab_path, write_json)


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
    return {"fwd_h": state.fwd.h, "fwd_c": state.fwd.c, "bwd_h": state.bwd.h, "bwd_c": state.bwd.c}


def _state_from_dict(d: dict[str, torch.Tensor], device) -> Optional[BiLMState]:
    if not d:
        return None
    d = {k: v.to(device) for k, v in d.items()}
    return BiLMState(LSTMState(d["fwd_h"], d["fwd_c"]), LSTMState(d["bwd_h"], d["bwd_c"]))


def prepare_run(cfg: RunConfig, run_dir: Path, vocab_file: Optional[Path] = None,
                progress: bool = True) -> tuple[RunConfig, Vocabulary]:
    """Resolves the data, writes config.json and vocab.txt into a new run directory."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    data = resolve_data(cfg.data)
    if vocab_file is not None:
        vocab, report = Vocabulary.from_file(vocab_file), None
    else:
        vocab, report = build_vocabulary(data, progress=progress)
    model = cfg.model.replace(vocab_size=len(vocab))
    cfg = RunConfig(model, data, cfg.optim, cfg.train)
    rank, _ = world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        vocab.save(vocab_path(run_dir))
        if report is not None:
            write_json(run_dir / "data_report.json", report.as_dict())
            if report.lines_skipped:
                print(f"vocabulary pass: {report.summary()}")
        cfg.save(run_dir / "config.json")
    return cfg, vocab


def _set_lr(optimizer, cfg: RunConfig, step: int) -> float:
    warm = cfg.optim.warmup_steps
    lr = cfg.optim.lr * min(1.0, (step + 1) / warm) if warm else cfg.optim.lr
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


def pretrain(cfg: Optional[RunConfig], run_dir: Path, resume: bool = False, progress: bool = True,
             vocab_file: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Trains (or resumes) the run in ``run_dir``; returns the summary it also writes to summary.json.

    ``overrides`` (resume only) replaces TrainConfig fields such as max_steps or max_minutes.
    """
    run_dir = Path(run_dir)
    if resume:
        cfg = load_run_config(run_dir)
        if overrides:
            cfg.train = type(cfg.train)(**{**cfg.train.__dict__, **overrides})
        vocab = Vocabulary.from_file(vocab_path(run_dir))
    else:
        cfg, vocab = prepare_run(cfg, run_dir, vocab_file, progress)
    rank, world_size = world()
    is_main = rank == 0
    tc = cfg.train
    device = default_device()
    torch.manual_seed(tc.seed)

    bilm = BiLM(cfg.model).to(device)
    optimizer = build_optimizer(bilm.parameters(), cfg.optim)
    engine = initialize_engine(LMObjective(bilm), optimizer, deepspeed_config(tc, cfg.optim))
    rank, world_size = world()
    is_main = rank == 0

    train_corpus = make_corpus(cfg.data.train, cfg.data)
    batcher = WindowBatcher(train_corpus, vocab, tc.batch_size, tc.num_steps,
                            row_start=rank * tc.batch_size, total_rows=world_size * tc.batch_size)
    valid_corpus = make_corpus(cfg.data.valid, cfg.data) if cfg.data.valid else None
    step, tokens_seen, state = 0, 0, None

    if resume:
        found = ckpt.latest_valid(run_dir)
        if found is None:
            raise ckpt.CheckpointError(f"{run_dir}: --resume found no loadable checkpoint in {ckpt.checkpoint_dir(run_dir)}")
        path, saved, data_states, _ = found
        bilm.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in saved:
            torch.cuda.set_rng_state(saved["rng_cuda"])
        if rank not in data_states:
            raise ckpt.CheckpointError(f"{path}: no data position for rank {rank}")
        batcher.load_state_dict(data_states[rank])
        state = _state_from_dict(saved.get(f"lstm_state_rank{rank}", {}), device)
        step, tokens_seen = int(saved["step"]), int(saved.get("tokens_seen", 0))
        if is_main:
            _truncate_metrics(run_dir, step)
            print(f"resumed from {path} at step {step}")

    logger = MetricsLogger(run_dir, cfg.to_dict(), tc.wandb_mode, tc.wandb_project, enabled=is_main, resume=resume)
    autocast = torch.bfloat16 if tc.precision == "bf16" else None

    def run_eval(max_batches):
        if valid_corpus is None:
            return None
        return evaluate_perplexity(bilm, valid_corpus, vocab, tc.batch_size, tc.num_steps, max_batches,
                                   progress=progress and is_main, device=device, row_start=rank * tc.batch_size,
                                   total_rows=world_size * tc.batch_size, autocast_dtype=autocast)

    def save(reason: str):
        saved = {"model": bilm.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "tokens_seen": tokens_seen, "rng_cpu": torch.get_rng_state(),
                 f"lstm_state_rank{rank}": _state_to_dict(state)}
        if device.type == "cuda":
            saved["rng_cuda"] = torch.cuda.get_rng_state()
        if is_main:  # single-writer; multi-rank data states are gathered in launch-aware code
            ckpt.save_checkpoint(run_dir, step, saved, {rank: batcher.state_dict()},
                                 {"reason": reason, "config": cfg.to_dict()}, tc.keep_checkpoints)

    if not resume and is_main and valid_corpus is not None:
        untrained = run_eval(tc.eval_max_batches)
        logger.log({"kind": "eval", "step": 0, **untrained})
        print(f"untrained model: valid ppl fwd {untrained['ppl_fwd']:.1f} bwd {untrained['ppl_bwd']:.1f}")

    start = time.time()
    window = {"nll_f": 0.0, "n_f": 0, "nll_b": 0.0, "n_b": 0, "tokens": 0, "t0": time.time()}
    bar = tqdm(total=tc.max_steps, initial=step, desc="pretrain", unit="step", disable=not (progress and is_main))
    stop_reason = "max_steps"
    data_iter = iter(batcher)
    try:
        while step < tc.max_steps:
            lr = _set_lr(optimizer, cfg, step)
            for _ in range(tc.grad_accum_steps):
                batch = next(data_iter).to(device)
                out, new_state = engine(batch.char_ids, batch.fwd_targets, batch.bwd_targets, state)
                engine.backward(out.loss)
                engine.step()
                state = new_state.detach()
                n_tok = int(batch.mask.sum())
                tokens_seen += n_tok * world_size
                window["tokens"] += n_tok
                window["nll_f"] += out.fwd_nll.item()
                window["n_f"] += int(out.fwd_count)
                window["nll_b"] += out.bwd_nll.item()
                window["n_b"] += int(out.bwd_count)
            step += 1
            if not math.isfinite(out.loss.item()):
                raise FloatingPointError(f"loss became {out.loss.item()} at step {step}; lower --lr or enable --grad-clip")
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = max(time.time() - window["t0"], 1e-9)
                rec = {"kind": "train", "step": step, "lr": lr, "epoch": batcher.epoch,
                       "loss": 0.5 * (window["nll_f"] / max(window["n_f"], 1) + window["nll_b"] / max(window["n_b"], 1)),
                       "ppl_fwd": perplexity(window["nll_f"], window["n_f"]),
                       "ppl_bwd": perplexity(window["nll_b"], window["n_b"]),
                       "tokens_per_s": window["tokens"] * world_size / dt, "tokens_seen": tokens_seen}
                logger.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", ppl_fwd=f"{rec['ppl_fwd']:.1f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                window = {"nll_f": 0.0, "n_f": 0, "nll_b": 0.0, "n_b": 0, "tokens": 0, "t0": time.time()}
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.max_steps:
                result = run_eval(tc.eval_max_batches)
                if result is not None:
                    logger.log({"kind": "eval", "step": step, **result})
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                save("periodic")
            if tc.max_minutes is not None and time.time() - start > 60 * tc.max_minutes:
                stop_reason = "max_minutes"
                break
    except KeyboardInterrupt:
        bar.close()
        save("interrupted")
        logger.close()
        print(f"interrupted: checkpoint at step {step} written; continue with --resume")
        raise
    bar.close()
    save(stop_reason)
    summary: dict[str, Any] = {"step": step, "stop_reason": stop_reason, "tokens_seen": tokens_seen,
                               "train_minutes": (time.time() - start) / 60, "data_report": batcher.report.as_dict()}
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
