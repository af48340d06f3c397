"""Penn Treebank perplexity of the adaptive softmax against the full softmax, same budget.

Trains the ``tiny`` preset through ``elmo_dist.train.pretrain`` once with the full softmax and
once per adaptive ``--div-values`` entry, identical in all else (same seed, data order,
optimizer, steps), then records the validation perplexity of each (a full pass over PTB valid,
the LSTM state carried along each row, n + 1 targets per sentence and direction) and its ratio
to the full softmax's. The claim checked: adaptive within a few percent of full. div_value 4 is
ModelConfig's default; at the tiny preset's P = 64 it leaves the 8,000-word first tail 16
dimensions, so 2 (32 dimensions) is run too. Training time per run is recorded (on a shared
machine only a rough indication; bench_softmax.py holds the side-by-side timing).

    python benchmarks/ppl_softmax.py [--steps 1500] [--div-values 4 2] [--threads 1] [--out FILE]

With --minutes each run stops at that wall time instead (same minutes, not same steps).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/ppl_softmax.py` from a checkout
    sys.path.insert(0, str(REPO))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model preset")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per run (1,450 = one PTB epoch)")
    p.add_argument("--minutes", type=float, default=None, help="train each run for this long instead of --steps")
    p.add_argument("--cutoffs", type=int, nargs="+", default=None,
                   help="adaptive cutoffs (default: ModelConfig's, [2000, 10000])")
    p.add_argument("--div-values", type=float, nargs="+", default=[4.0, 2.0],
                   help="one adaptive run per value: tail k projects to P / div**k dims")
    p.add_argument("--batch-size", type=int, default=32, help="rows per batch")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (the demo's)")
    p.add_argument("--seed", type=int, default=1234, help="seed of both runs")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--runs-dir", type=Path, default=None, help="keep the run directories here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu" / "ppl_softmax.json",
                   help="JSON results path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run_config(args, softmax: str, div_value: float | None):
    from elmo_dist.model import preset
    from elmo_dist.train import DataConfig, OptimConfig, RunConfig, TrainConfig
    overrides = {"softmax": softmax}
    if args.cutoffs:
        overrides["adaptive_cutoffs"] = args.cutoffs
    if div_value is not None:
        overrides["adaptive_div_value"] = div_value
    train = TrainConfig(batch_size=args.batch_size, max_steps=10**9 if args.minutes else args.steps,
                        max_minutes=args.minutes, seed=args.seed, eval_every=0, checkpoint_every=0,
                        eval_max_batches=1,  # the untrained-model check only; the final pass is full
                        keep_checkpoints=1, log_every=50, wandb_mode="disabled")
    return RunConfig(preset(args.preset, **overrides), DataConfig(), OptimConfig(optimizer="adam", lr=args.lr), train)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.conftest import provenance
    from elmo_dist.train import pretrain

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="ppl-softmax-"))
    runs = {"full": ("full", None), **{f"adaptive-div{d:g}": ("adaptive", d) for d in args.div_values}}
    results = {}
    for name, (softmax, div_value) in runs.items():
        run_dir = runs_dir / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        summary = pretrain(run_config(args, softmax, div_value), run_dir, progress=not args.no_progress)
        saved = json.loads((run_dir / "config.json").read_text())["model"]
        results[name] = {
            "valid": summary["valid"], "steps": summary["step"], "train_minutes": summary["train_minutes"],
            "tokens_seen": summary["tokens_seen"], "softmax": saved["softmax"], "vocab_size": saved["vocab_size"],
            **({"adaptive_cutoffs": saved["adaptive_cutoffs"], "adaptive_div_value": saved["adaptive_div_value"]}
               if softmax == "adaptive" else {}),
        }
        print(f"{name:15s} valid ppl fwd {summary['valid']['ppl_fwd']:.1f} bwd {summary['valid']['ppl_bwd']:.1f} "
              f"avg {summary['valid']['ppl']:.1f} after {summary['step']} steps ({summary['train_minutes']:.1f} min)",
              flush=True)
    full = results["full"]["valid"]["ppl"]
    ratios = {name: r["valid"]["ppl"] / full for name, r in results.items() if name != "full"}
    prov = provenance()
    prov["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    payload = {
        "benchmark": "ppl_softmax", "provenance": prov,
        "setup": {"preset": args.preset, "corpus": "PTB train / valid", "optimizer": "adam", "lr": args.lr,
                  "batch_size": args.batch_size, "num_steps": 20, "seed": args.seed,
                  "budget": {"minutes": args.minutes} if args.minutes else {"steps": args.steps}},
        "results": results,
        "adaptive_over_full_ppl": ratios,
        "relative_difference_percent": {k: 100 * (v - 1) for k, v in ratios.items()},
        "nll_difference_nats": {k: math.log(v) for k, v in ratios.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    for name, ratio in ratios.items():
        print(f"{name} / full validation perplexity: {results[name]['valid']['ppl']:.1f} / {full:.1f} = "
              f"{ratio:.3f} ({100 * (ratio - 1):+.1f}%)")
    print(f"wrote {args.out}")
    if args.runs_dir is None:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
