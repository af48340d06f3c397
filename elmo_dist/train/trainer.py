"""One rank's part of a pretraining run, as a short sequence of named steps.

    Trainer(...)          pick the checkpoint (resume), build the engine, the data, restore
    .run()                untrained evaluation; then per optimizer step: train the micro-batches,
                          log, evaluate (keeping the best checkpoint, stopping early), checkpoint,
                          vote on stopping; at the end a checkpoint, the final evaluation and
                          summary.json

What a checkpoint holds is written by :meth:`Trainer.save` and read by :meth:`Trainer._restore`
through ``checkpoint.build_state`` / ``checkpoint.rank_state``, the one definition of it (the
converter builds its step-0 checkpoint with the same function). The order of RNG draws is part of
the contract: parameter init seeds the global RNG, ranks > 0 reseed after the engine is built,
and a restore sets each rank's saved RNG state, so N steps + resume + N steps equals 2N steps.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from elmo_dist.data import SkipReport, Vocabulary, WindowBatcher
from elmo_dist.utils import atomic_write_json as write_json
from elmo_dist.utils import pick_device

from . import checkpoint as ckpt
from .budget import Budget, EarlyStop
from .config import RunConfig
from .distributed import (all_reduce_sum, any_rank_each, barrier, broadcast_from_main, build_optimizer, deepspeed_config,
                          gather_to_main, initialize_engine, zero_stage)
from .evaluate import evaluate_perplexity
from .faults import RunInterrupted, StopSignals
from .malloc import keep_freed_memory
from elmo_dist.metrics import MetricsLogger, perplexity, read_metrics
from .objective import LMObjective, rank_seed, state_from_dict, state_to_dict
from .optimizer_state import gather_optimizer_state, load_optimizer_state
from .rundir import init_model, make_corpus
from .schedule import learning_rate


class LossDiverged(FloatingPointError):
    """The training loss became NaN or infinite. The run stops at once: the weights of that
    step are never checkpointed, so the newest checkpoint is the last good one."""

    def __init__(self, loss: float, step: int, last_checkpoint: Optional[int], lr: float):
        kept = (f"the last good checkpoint is step {last_checkpoint}" if last_checkpoint is not None
                else "no checkpoint was written")
        super().__init__(f"training diverged: the loss became {loss} at step {step}; {kept}; start a new run with "
                         f"a lower --lr (this run's is {lr:g}) or a --grad-clip")


@dataclasses.dataclass
class Position:
    """Where training is, for the message when another rank is lost."""

    step: int = 0
    last_checkpoint: Optional[int] = None


@dataclasses.dataclass
class Window:
    """Sums of the train metrics since the last log line (this rank's)."""

    nll_f: float = 0.0
    n_f: int = 0
    nll_b: float = 0.0
    n_b: int = 0
    tokens: int = 0
    t0: float = dataclasses.field(default_factory=time.time)


class Trainer:
    """One rank's training of the run in ``run_dir`` (see the module docstring)."""

    def __init__(self, cfg: RunConfig, vocab: Vocabulary, run_dir: Path, resume: bool, progress: bool,
                 user_ds: Optional[dict], ds_source: str, watchdog, position: Position, rank: int, world_size: int):
        self.cfg, self.vocab, self.run_dir, self.resume = cfg, vocab, Path(run_dir), resume
        self.progress, self.watchdog, self.position = progress, watchdog, position
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        self.device = pick_device()  # this rank's GPU, or the CPU
        keep_freed_memory()  # every step reallocates the same large buffers (train.malloc)
        found = self._pick_checkpoint() if resume else None
        self.tc = cfg.train
        self._build_engine(deepspeed_config(self.tc, cfg.optim, user_ds, ds_source), found)
        self._build_data()
        self.step, self.tokens_seen, self.state = 0, 0, None
        self.unsynced_tokens = 0  # --epochs: this rank's tokens not yet summed into tokens_seen
        self.targets = torch.zeros(2, dtype=torch.float64)  # this rank's trained targets: forward, backward
        self.early = EarlyStop(self.tc.early_stop_patience)
        if found is not None:
            self._restore(*found)
        self.logger = MetricsLogger(self.run_dir, cfg.to_dict(), self.tc.wandb_mode, self.tc.wandb_project,
                                    enabled=self.is_main, resume=resume)
        self.autocast = torch.bfloat16 if self.tc.precision == "bf16" else None

    # ---------------------------------------------------------------- setting up
    def _pick_checkpoint(self):
        """Rank 0 picks the newest loadable checkpoint (warning about damaged newer ones); every
        rank loads that one. Adjusts gradient accumulation to keep the saved global batch."""
        self.watchdog.beat("loading the checkpoint")
        hit = ckpt.latest_valid(self.run_dir) if self.is_main else None
        chosen = broadcast_from_main(None if hit is None else str(hit[0]))
        if chosen is None:
            raise ckpt.CheckpointError(f"{self.run_dir}: --resume found no loadable checkpoint in "
                                       f"{ckpt.checkpoint_dir(self.run_dir)}")
        found = hit if self.is_main else (Path(chosen), *ckpt.load_checkpoint(Path(chosen)))
        _, _, data_states, meta = found
        self.saved_world = ckpt.saved_world_size(meta, data_states)
        saved_accum = int(meta.get("grad_accum_steps", self.cfg.train.grad_accum_steps))
        accum = resume_accumulation(self.cfg.train, self.saved_world, saved_accum, self.world_size, self.is_main)
        self.cfg.train = dataclasses.replace(self.cfg.train, grad_accum_steps=accum)
        return found

    def _build_engine(self, ds_cfg: dict, found) -> None:
        self.watchdog.beat("building the model and the DeepSpeed engine")
        self.ds_cfg = ds_cfg
        self.bilm = init_model(self.cfg.model, self.tc.seed).to(self.device)  # seeds the global RNG (dropout)
        if found is not None:  # before the engine exists: ZeRO copies these weights into its partitions
            self.bilm.load_state_dict(found[1]["model"])
        self.engine = initialize_engine(LMObjective(self.bilm), build_optimizer(self.bilm.parameters(), self.cfg.optim),
                                        ds_cfg)
        self.optimizer = self.engine.optimizer  # under ZeRO, the partitioned optimizer that owns lr and state
        if self.rank:
            torch.manual_seed(rank_seed(self.tc.seed, self.rank))

    def _build_data(self) -> None:
        tc, data = self.tc, self.cfg.data
        self.batcher = WindowBatcher(make_corpus(data.train, data), self.vocab, tc.batch_size, tc.num_steps,
                                     row_start=self.rank * tc.batch_size, total_rows=self.world_size * tc.batch_size,
                                     max_passes=tc.epochs)
        self.valid_corpus = make_corpus(data.valid, data) if data.valid else None

    def _restore(self, path: Path, saved: dict, data_states: dict, meta: dict) -> None:
        load_optimizer_state(self.engine, self.bilm, saved["optimizer"])
        mine = ckpt.rank_state(saved, self.rank)
        if mine.get("rng_cpu") is not None:
            torch.set_rng_state(mine["rng_cpu"])
        if self.device.type == "cuda" and mine.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(mine["rng_cuda"])
        if self.saved_world == self.world_size:
            if self.rank not in data_states:
                raise ckpt.CheckpointError(f"{path}: no data position for rank {self.rank}")
            self.batcher.load_state_dict(data_states[self.rank])
            self.state = state_from_dict(mine.get("lstm", {}), self.device)
            if mine.get("targets") is not None:
                self.targets = mine["targets"].clone()
        else:
            self.batcher.load_state_dict(ckpt.resplit_data_states(data_states, self.batcher.state_dict()))
            if self.is_main:
                warnings.warn(f"{path} was written by {self.saved_world} ranks and is resumed on {self.world_size}: "
                              "batch rows are re-split, each starting at the matching fraction of its corpus region "
                              "with zero LSTM state, so the data order differs from an uninterrupted run; resume on "
                              f"{self.saved_world} ranks for an exact continuation", stacklevel=4)
        self.step, self.tokens_seen = int(saved["step"]), int(saved.get("tokens_seen", 0))
        self.early.load(saved.get("early_stop"))
        self.position.step = self.position.last_checkpoint = self.step
        if self.is_main:
            truncate_metrics(self.run_dir, self.step)
            print(f"resumed from {path} at step {self.step}")

    # ---------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        if not self.resume and self.valid_corpus is not None:
            untrained = self.evaluate(self.tc.eval_max_batches)  # every rank: the sums are all-reduced
            self.logger.log({"kind": "eval", "step": 0, **untrained})
            if self.is_main:
                print(f"untrained model: valid ppl fwd {untrained['ppl_fwd']:.1f} bwd {untrained['ppl_bwd']:.1f}")
        self.start = time.time()
        self.window = Window()
        budget = Budget(self.tc)
        bar = tqdm(total=budget.total, initial=budget.done(self.step, self.batcher, 0.0), desc="pretrain",
                   unit=budget.unit, disable=not (self.progress and self.is_main), bar_format=budget.bar_format)
        signals = StopSignals()
        stop_reason = "max_steps"
        try:
            while self.step < self.tc.max_steps:
                self.train_step()
                bar.update(budget.done(self.step, self.batcher, time.time() - self.start) - bar.n)
                self.log_if_due(bar)
                stop_reason = self.after_step(signals)
                if stop_reason:
                    break
            stop_reason = stop_reason or "max_steps"
        except KeyboardInterrupt:
            signals.restore()
            bar.close()
            self._interrupted_by_keyboard()
            raise
        signals.restore()
        bar.close()
        self.save(stop_reason)
        if signals.received is not None:
            self.logger.close()
            if self.is_main:
                self.write_interrupted_summary(signals.received)
            raise RunInterrupted(signals.received, self.step, self.run_dir)
        return self.finish(stop_reason)

    def train_step(self) -> None:
        """One optimizer step: ``grad_accum_steps`` micro-batches through the engine."""
        tc = self.tc
        self.lr = self._set_lr()
        for micro in range(tc.grad_accum_steps):
            self.watchdog.beat(f"training step {self.step + 1} (micro-batch {micro + 1} of {tc.grad_accum_steps})")
            batch = (self.batcher.next_batch() or self.batcher.padding_batch()).to(self.device)  # padding: epochs done
            out, new_state = self.engine(batch.char_ids, batch.fwd_targets, batch.bwd_targets, self.state)
            self.engine.backward(out.loss)
            self.engine.step()
            self.state = new_state.detach()
            n_tok = int(batch.mask.sum())
            self.targets += torch.tensor([float(out.fwd_count), float(out.bwd_count)], dtype=torch.float64)
            if tc.epochs:  # rows that finished their passes pad: counts differ by rank, summed at log/save
                self.unsynced_tokens += n_tok
            else:  # training rows are never padded then: every rank reads as many tokens
                self.tokens_seen += n_tok * self.world_size
            w = self.window
            w.tokens += n_tok
            w.nll_f, w.n_f = w.nll_f + out.fwd_nll.item(), w.n_f + int(out.fwd_count)
            w.nll_b, w.n_b = w.nll_b + out.bwd_nll.item(), w.n_b + int(out.bwd_count)
        self.step += 1
        self.position.step = self.step
        if not math.isfinite(out.loss.item()):
            raise LossDiverged(out.loss.item(), self.step, self.position.last_checkpoint, self.cfg.optim.lr)

    def _sync_tokens(self) -> None:
        """Adds every rank's unsynced --epochs tokens to tokens_seen (a collective under --epochs;
        called by every rank at the same steps: log, save, finish)."""
        if self.tc.epochs:
            total = all_reduce_sum(torch.tensor([self.unsynced_tokens], dtype=torch.float64), self.device)
            self.tokens_seen += int(total.item())
            self.unsynced_tokens = 0

    def _set_lr(self) -> float:
        o = self.cfg.optim
        lr = learning_rate(o.lr, self.step, o.schedule, o.warmup_steps, self.tc.max_steps, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def log_if_due(self, bar) -> None:
        """Every ``log_every`` steps: train loss, perplexities and tokens/s summed over ranks."""
        if self.step % self.tc.log_every and self.step != self.tc.max_steps:
            return
        self._sync_tokens()
        w = self.window
        sums = all_reduce_sum(torch.tensor([w.nll_f, w.n_f, w.nll_b, w.n_b, w.tokens], dtype=torch.float64),
                              self.device)
        nll_f, n_f, nll_b, n_b, tokens = sums.tolist()
        rec = {"kind": "train", "step": self.step, "lr": self.lr, "epoch": self.batcher.epoch,
               "loss": 0.5 * (nll_f / max(n_f, 1) + nll_b / max(n_b, 1)),
               "ppl_fwd": perplexity(nll_f, n_f), "ppl_bwd": perplexity(nll_b, n_b),
               "tokens_per_s": tokens / max(time.time() - w.t0, 1e-9), "tokens_seen": self.tokens_seen}
        self.logger.log(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", ppl_fwd=f"{rec['ppl_fwd']:.1f}", tok_s=f"{rec['tokens_per_s']:.0f}")
        self.window = Window()

    def after_step(self, signals: StopSignals) -> Optional[str]:
        """Evaluation (best checkpoint, early stop), periodic checkpoint, and the stop vote;
        the stop reason, or None to go on. Every rank must stop at the same step: rank clocks
        and signals differ, so they vote."""
        tc = self.tc
        early_stop = False
        if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.max_steps:
            result = self.evaluate(tc.eval_max_batches)
            if result is not None:
                self.logger.log({"kind": "eval", "step": self.step, **result})
                if self.early.update(result["ppl"], self.step):
                    self.save("best", name=ckpt.BEST)
                early_stop = self.early.exhausted
        if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
            self.save("periodic")
        out_of_time = tc.max_minutes is not None and time.time() - self.start > 60 * tc.max_minutes
        # One vote for both questions: stop now (time, a signal), and is any row still reading.
        stop, reading = any_rank_each([out_of_time or signals.received is not None,
                                       bool(tc.epochs) and not self.batcher.finished], self.device)
        if stop:
            return f"signal ({signals.received})" if signals.received else "max_minutes"
        if early_stop:
            return "early_stop"
        if tc.epochs and not reading:
            return "epochs"
        return None

    def evaluate(self, max_batches: Optional[int]) -> Optional[dict]:
        """Held-out perplexity over every rank's rows (None without a valid corpus)."""
        if self.valid_corpus is None:
            return None
        self.watchdog.pause("evaluating")  # bounded by the process-group timeout of its all-reduce
        tc = self.tc
        result = evaluate_perplexity(self.bilm, self.valid_corpus, self.vocab, tc.batch_size, tc.num_steps,
                                     max_batches, progress=self.progress and self.is_main, device=self.device,
                                     row_start=self.rank * tc.batch_size, total_rows=self.world_size * tc.batch_size,
                                     autocast_dtype=self.autocast)
        self.watchdog.beat(f"training after the evaluation at step {self.step}")
        return result

    # ---------------------------------------------------------------- checkpoints and endings
    def save(self, reason: str, name: Optional[str] = None) -> None:
        """A checkpoint of every rank's state (collective under ZeRO); rank 0 writes it."""
        self.watchdog.beat(f"writing the checkpoint at step {self.step}")
        self._sync_tokens()
        optim_state = gather_optimizer_state(self.engine, self.bilm)
        mine = {"data": self.batcher.state_dict(), "lstm": state_to_dict(self.state),
                "rng_cpu": torch.get_rng_state(), "targets": self.targets.clone()}
        if self.device.type == "cuda":
            mine["rng_cuda"] = torch.cuda.get_rng_state()
        ranks = gather_to_main(mine)
        if self.is_main:
            state = ckpt.build_state(self.bilm.state_dict(), optim_state, self.step, self.tokens_seen, ranks,
                                     early_stop=self.early.as_dict())
            meta = {"reason": reason, "config": self.cfg.to_dict(), "world_size": self.world_size,
                    "grad_accum_steps": self.tc.grad_accum_steps, "zero_stage": zero_stage(self.ds_cfg),
                    "deepspeed": self.ds_cfg}
            ckpt.save_checkpoint(self.run_dir, self.step, state, {k: r["data"] for k, r in enumerate(ranks)}, meta,
                                 self.tc.keep_checkpoints, name=name)
            if name is None:  # complete on disk now: a peer lost in the barrier below must not hide it
                self.position.last_checkpoint = self.step
        barrier()  # a checkpoint counts once rank 0 has renamed it into place
        if name is None:
            self.position.last_checkpoint = self.step

    def _interrupted_by_keyboard(self) -> None:
        if self.world_size == 1:  # several ranks are interrupted at different points: no collective save
            self.save("interrupted")
            self.write_interrupted_summary("SIGINT")
            print(f"interrupted: checkpoint at step {self.step} written; continue with --resume auto")
        self.logger.close()

    def write_interrupted_summary(self, signal_name: str) -> None:
        """summary.json of a run stopped by a signal: what happened and the command that continues it."""
        write_json(self.run_dir / "summary.json", {
            "status": "interrupted", "signal": signal_name, "step": self.step,
            "stop_reason": f"signal ({signal_name})", "tokens_seen": self.tokens_seen,
            "train_minutes": (time.time() - self.start) / 60, "world_size": self.world_size,
            "resume_with": f"elmo-dist pretrain --run-dir {self.run_dir} --resume auto"})

    def finish(self, stop_reason: str) -> dict[str, Any]:
        """The final evaluation and summary.json (also returned)."""
        self._sync_tokens()
        reports = gather_to_main(self.batcher.report.as_dict())
        trained = all_reduce_sum(self.targets, self.device).tolist()
        summary: dict[str, Any] = {
            "status": "finished", "step": self.step, "stop_reason": stop_reason, "tokens_seen": self.tokens_seen,
            "train_minutes": (time.time() - self.start) / 60, "world_size": self.world_size,
            "epochs": self.batcher.passes_done() if self.tc.epochs else None,
            "targets_trained": {"fwd": int(trained[0]), "bwd": int(trained[1])}}
        if self.early.best_step is not None:
            summary["best"] = {"step": self.early.best_step, "ppl": self.early.best,
                               "checkpoint": str(ckpt.checkpoint_dir(self.run_dir) / ckpt.BEST)}
        if self.is_main:
            merged = SkipReport()
            for r in reports:
                merged.merge(SkipReport.from_dict(r))
            summary["data_report"] = merged.as_dict()
        final = self.evaluate(None)
        if final is not None:
            self.logger.log({"kind": "eval", "step": self.step, "final": True, **final})
            summary["valid"] = final
        evals = [r for r in read_metrics(self.run_dir, "eval") if r.get("step") == 0] if self.is_main else []
        if evals:
            summary["untrained_valid"] = {k: evals[0][k] for k in ("ppl_fwd", "ppl_bwd", "ppl")}
        if self.is_main:
            write_json(self.run_dir / "summary.json", summary)
        self.logger.close()
        return summary


def truncate_metrics(run_dir: Path, step: int) -> None:
    """After a resume from ``step``, drop records of steps that will be trained again."""
    rows = read_metrics(run_dir)
    kept = [r for r in rows if r.get("step", 0) <= step or r.get("kind") == "run"]
    if len(kept) != len(rows):
        import json
        from elmo_dist.utils import atomic_write_text
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def resume_accumulation(tc, saved_world: int, saved_accum: int, world_size: int, is_main: bool) -> int:
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
                      f"{tc.batch_size} x world size {world_size}", stacklevel=5)
    return saved_accum
