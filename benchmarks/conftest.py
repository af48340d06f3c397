"""Benchmark plumbing: provenance for every result, and a ratio table per group at the end.

Run:  python -m pytest benchmarks/ --benchmark-only   (or `elmo-dist bench`)
Each group (e.g. one LSTM size) is compared against its baseline (the test whose
``extra_info["baseline"]`` is True) and the table is written with provenance to
benchmarks/results/<cpu|gpu>/<module>.json.

Two helpers for ratios that survive a shared, loaded machine:
  interleaved(benchmark, variants, ...)  times several variants round-robin inside one test,
      so a change of load hits them all; medians, ratios and peak memory per variant go to
      ``extra_info["variants"]``.
  peak_matmul_gflop_per_s()  the device's achievable matmul rate, measured by a runtest hook
      right after every benchmark that records ``gflop_per_s`` (the training step), so
      the fraction of peak compares two figures taken minutes apart at most.
ELMO_BENCH_THREADS=N sets torch's CPU threads for the session (`elmo-dist bench --threads`).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

RESULTS = Path(__file__).parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance() -> dict:
    import torch
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "deepspeed"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip()) if commit else None
    except OSError:
        commit = dirty = None
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": versions, "commit": commit, "dirty_tree": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(), "load_average": list(os.getloadavg()),
    }


def _command() -> str:
    """The command line as typed: `python -m pytest ...`, `pytest ...` or `elmo-dist bench ...`."""
    argv0 = Path(sys.argv[0])
    head = [Path(sys.executable).name, "-m", argv0.parent.name] if argv0.name == "__main__.py" else [argv0.name]
    return " ".join([*head, *sys.argv[1:]])


def pytest_configure(config):
    threads = os.environ.get("ELMO_BENCH_THREADS")
    if threads:
        import torch
        torch.set_num_threads(int(threads))


def sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_matmul_gflop_per_s(repeats: int = 5) -> dict:
    """Best-of-``repeats`` fp32 square matmul rate on the benchmark device (2 flops per MAC).

    fp32 because the training step it is compared with runs in fp32; n = 2048 on CPU (the GEMM
    is compute-bound there already), 8192 on a GPU. TF32 follows torch's setting, recorded.
    """
    import torch
    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 2048
    device = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return {"peak_gflop_per_s": 2 * n ** 3 / best / 1e9, "peak_matmul_n": n, "peak_dtype": "float32",
            "peak_tf32": bool(cuda and torch.backends.cuda.matmul.allow_tf32)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """After a benchmark that recorded gflop_per_s: the measured peak and the fraction of it."""
    yield
    bench = getattr(item, "funcargs", {}).get("benchmark")
    rate = bench.extra_info.get("gflop_per_s") if bench is not None else None
    if rate is None:
        return
    peak = peak_matmul_gflop_per_s()
    bench.extra_info.update(peak, fraction_of_peak=rate / peak["peak_gflop_per_s"])


def peak_bytes(fn: Callable[[], None]) -> Optional[int]:
    """Peak bytes allocated by one call of ``fn`` above what was allocated before it.

    CUDA: the caching allocator's peak counter. CPU: tracemalloc cannot see torch's allocator,
    and RSS mixes in glibc's free lists, so the call runs under torch.profiler with
    profile_memory=True and the allocation / free events (bytes, in time order) are summed; their
    running maximum is the peak of live tensor bytes during the call.
    """
    import torch
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def interleaved(benchmark, variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 1,
                baseline: Optional[str] = None, memory: bool = True,
                max_rounds: Optional[dict[str, int]] = None) -> dict:
    """Times every variant once per round, round-robin, ``rounds`` times after ``warmup`` rounds.

    The pytest-benchmark fixture times the whole round; the figures that matter are per variant
    in ``benchmark.extra_info["variants"][name]``: median_s, times_s, speedup_vs_baseline (the
    baseline's median over this one's, both from the same rounds) and peak_bytes (measured on
    the first warm-up call, which is not timed). ``max_rounds`` caps the timed rounds of slow
    variants: they take part in the first rounds only. Variants the caller could not run (does
    not fit, fails) go into the same dict beforehand, with their status. Returns that dict.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    cap = max_rounds or {}

    def one_round():
        for name, fn in variants.items():
            if len(times[name]) >= cap.get(name, rounds):
                continue
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)

    peaks: dict[str, Optional[int]] = {}
    for w in range(max(warmup, int(memory))):
        for name, fn in variants.items():
            if memory and w == 0:
                peaks[name] = peak_bytes(fn)
            else:
                fn()
    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=0)
    out = benchmark.extra_info.setdefault("variants", {})
    for name, ts in times.items():
        row = out.setdefault(name, {})
        row.update(status="ok", median_s=statistics.median(ts), times_s=ts)
        if memory:
            row["peak_bytes"] = peaks[name]
    if baseline is not None and baseline in times:
        benchmark.extra_info["baseline_variant"] = baseline
        for row in out.values():
            if row.get("status") == "ok":
                row["speedup_vs_baseline"] = out[baseline]["median_s"] / row["median_s"]
    return out


def median_s(benchmark):
    """Median seconds of a finished benchmark, None when benchmarks are disabled."""
    return benchmark.stats.stats.median if benchmark.stats is not None else None


def ratio_table(benchmarks) -> dict[str, list[dict]]:
    """Per group: each row's median time and its speed-up over the group's baseline."""
    groups: dict[str, list] = {}
    for bench in benchmarks:
        groups.setdefault(bench.group or bench.name, []).append(bench)
    table = {}
    for group, rows in groups.items():
        base = next((b for b in rows if b.extra_info.get("baseline")), None)
        out = []
        for b in rows:
            median = b.stats.median
            row = {"name": b.name, "median_s": median, **{k: v for k, v in b.extra_info.items() if k != "baseline"}}
            if base is not None:
                row["speedup_vs_baseline"] = base.stats.median / median
                row["baseline"] = base.name
            out.append(row)
        table[group] = out
    return table


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is None or not bs.benchmarks or getattr(bs, "disabled", False):
        return
    prov = provenance()
    by_module: dict[str, list] = {}
    for b in bs.benchmarks:
        by_module.setdefault(Path(b.fullname.split("::")[0]).stem, []).append(b)
    kind = "gpu" if prov["device"] != "cpu" else "cpu"
    for module, rows in by_module.items():
        table = ratio_table(rows)
        out = RESULTS / kind / f"{module}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"provenance": prov, "groups": table}, indent=2) + "\n")
        os.replace(tmp, out)
        lines = [f"\n{module}: results -> {out}"]
        for group, group_rows in table.items():
            for r in group_rows:
                extra = "".join(f"  {k}={v:.0f}" if isinstance(v, float) else "" for k, v in r.items()
                                if k.endswith("per_s"))
                speed = f"  x{r['speedup_vs_baseline']:.2f} vs {r['baseline']}" if "speedup_vs_baseline" in r else ""
                lines.append(f"  [{group}] {r['name']}: {r['median_s'] * 1e3:.1f} ms{speed}{extra}")
                for name, v in r.get("variants", {}).items():
                    if v.get("status") != "ok":
                        lines.append(f"      {name}: {v.get('status')}")
                        continue
                    vs = f"  x{v['speedup_vs_baseline']:.2f} vs {r.get('baseline_variant')}" if "speedup_vs_baseline" in v else ""
                    mem = f"  peak {v['peak_bytes'] / 2**20:.0f} MiB" if v.get("peak_bytes") is not None else ""
                    lines.append(f"      {name}: {v['median_s'] * 1e3:.1f} ms{vs}{mem}")
        print("\n".join(lines))
