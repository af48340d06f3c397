"""Data-parallel scaling on this machine: training tokens/s with 1 and 2 ranks.

    python -m benchmarks.bench_scaling [--presets tiny small] [--steps 40]

Each configuration is a real `elmo-dist pretrain` launched by torchrun on PTB train (batch 32
rows x 20 tokens per rank, Adagrad, ZeRO 0, no evaluation): ranks x threads per rank =
1x1, 1xC and Cx1 on a C-core machine (OMP_NUM_THREADS and --threads set per rank, so the
ranks never oversubscribe the cores). tokens/s is the logged global rate (summed over ranks)
over the log windows after the first (warm-up) one; the median window is reported.

Scaling efficiency (weak scaling, a fixed per-rank batch and one core per rank):
    efficiency = tokens/s(C ranks x 1 thread) / (C x tokens/s(1 rank x 1 thread))
and the ratio that matters on a box with C cores: C ranks x 1 thread against 1 rank x C
threads. The machine may be shared, so 1x1 and Cx1 run back to back ``--repeats`` times and
each efficiency comes from one adjacent pair (similar load); the median pair is reported with
the range, and the load average around every launch is recorded. Results with provenance go
to benchmarks/results/cpu/bench_scaling.json (gpu/ on a CUDA machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.conftest import RESULTS, provenance

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(preset: str, ranks: int, threads: int, steps: int, batch_size: int, corpus: Path,
               log_every: int, timeout_s: float) -> dict:
    """One launch; returns tokens/s figures from its metrics.jsonl."""
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "-m", "elmo_dist", "pretrain", "--run-dir", str(run),
               "--corpus", str(corpus), "--preset", preset, "--batch-size", str(batch_size), "--num-steps", "20",
               "--max-steps", str(steps), "--log-every", str(log_every), "--eval-every", "0",
               "--checkpoint-every", "0", "--threads", str(threads), "--wandb", "disabled", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="disabled")
        load_before = os.getloadavg()[0]
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parents[1])
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rates = [r["tokens_per_s"] for r in rows if r.get("kind") == "train"][1:]  # drop the warm-up window
    return {"preset": preset, "ranks": ranks, "threads_per_rank": threads, "steps": steps,
            "global_batch_tokens": ranks * batch_size * 20, "tokens_per_s": statistics.median(rates),
            "tokens_per_s_windows": rates, "wall_s": time.time() - t0, "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0],
            "command": " ".join(Path(c).name if c == sys.executable else c for c in cmd)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per launch (tiny; small runs a quarter)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per rank")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="C: ranks in the multi-rank run")
    p.add_argument("--repeats", type=int, default=3, help="back-to-back 1x1 / Cx1 pairs per preset")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    args = p.parse_args(argv)

    from elmo_dist.data import ptb_paths
    from elmo_dist.train.rundir import cache_dir
    corpus = ptb_paths(cache_dir() / "ptb")["train"]
    C = args.cores
    results = []
    for preset in args.presets:
        steps = args.steps if preset == "tiny" else max(args.steps // 4, 8)
        log_every = max(steps // 5, 1)

        def launch(ranks, threads, repeat):
            r = run_config(preset, ranks, threads, steps, args.batch_size, corpus, log_every, args.timeout)
            r["repeat"] = repeat
            results.append(r)
            print(f"{preset} #{repeat}: {ranks} rank(s) x {threads} thread(s): {r['tokens_per_s']:.0f} tokens/s "
                  f"(load {r['loadavg_1min_before']:.1f} -> {r['loadavg_1min_after']:.1f})", flush=True)
            return r

        pairs = [(launch(1, 1, i), launch(C, 1, i)) for i in range(args.repeats)]
        wide = launch(1, C, 0)
        eff = sorted(((many["tokens_per_s"] / (C * one["tokens_per_s"]), one, many) for one, many in pairs),
                     key=lambda t: t[0])
        median_eff, one, many = eff[len(eff) // 2]
        summary = {"preset": preset, "summary": True, "repeats": args.repeats,
                   "scaling_efficiency": median_eff,
                   "scaling_efficiency_range": [eff[0][0], eff[-1][0]],
                   "tokens_per_s_1rank_1thread": one["tokens_per_s"],
                   f"tokens_per_s_{C}ranks_1thread": many["tokens_per_s"],
                   f"tokens_per_s_1rank_{C}threads": wide["tokens_per_s"],
                   f"speedup_{C}ranks_vs_1rank_1thread": many["tokens_per_s"] / one["tokens_per_s"],
                   f"ratio_{C}ranks_x1thread_vs_1rank_x{C}threads": many["tokens_per_s"] / wide["tokens_per_s"]}
        results.append(summary)
        print(f"{preset}: scaling efficiency {median_eff:.2f} (range {eff[0][0]:.2f}-{eff[-1][0]:.2f} over "
              f"{args.repeats} pairs); {C} ranks x 1 thread vs 1 rank x {C} threads: "
              f"x{many['tokens_per_s'] / wide['tokens_per_s']:.2f}", flush=True)

    prov = provenance()
    prov["command"] = " ".join(["python", "-m", "benchmarks.bench_scaling", *(argv if argv is not None else sys.argv[1:])])
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=Path(__file__).parent)
    prov["tree_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    kind = "gpu" if prov["device"] != "cpu" else "cpu"
    out = RESULTS / kind / "bench_scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": prov, "results": results}, indent=2) + "\n")
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
