"""Benchmark plumbing: provenance for every result, and a ratio table per group at the end.

Run:  python -m pytest benchmarks/ --benchmark-only   (or `elmo-dist bench` later)
Each group (e.g. one LSTM size) is compared against its baseline (the test whose
``extra_info["baseline"]`` is True) and the table is written with provenance to
benchmarks/results/<cpu|gpu>/<module>.json.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

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
    except OSError:
        commit = None
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": versions, "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "pytest", *sys.argv[1:]]),
    }


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
        print("\n".join(lines))
