"""benchmarks/gpu_check.sh, the one prepared device check: its dry run on CPU (so that the script
cannot rot while no GPU is at hand) and how it degrades (no CUDA, a part failing or hanging)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_every_part(tmp_path):
    """`bash benchmarks/gpu_check.sh OUT --dry-run`: every part runs on CPU (kernels under the
    interpreter, tiny sizes) and reports ok, with the fields a GPU run is read by."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_SITE=str(tmp_path / "site"))
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["environment"]["dry_run"] is True
    assert {k: v["status"] for k, v in summary["parts"].items()} == dict.fromkeys("abcde", "ok"), summary["parts"]
    assert len(list(out.iterdir())) <= 8  # what a device run brings back

    def part(key):
        return json.loads((out / gpu_check.PARTS[key][0]).read_text())

    assert part("a")["counts"]["passed"] >= 3 and part("a")["counts"]["failed"] == 0
    large = part("b")
    assert {(c["size"], c["dtype"]) for c in large["cases"]} == {(s, d) for s in ("tiny", "odd") for d in ("fp32", "bf16")}
    for case in large["cases"]:
        assert case["ok"] and not case["run_twice_differs"] and set(case["rel_err"]) >= {"out", "d_w_rec", "d_c0"}
        assert case["fraction_out_clipped"] > 0  # the clips bind
    assert all(p["ok"] for p in large["nan_probes"])
    bench = part("c")
    variants = {(r["dtype"], r["variant"]) for r in bench["results"] if "fwd_bwd_ms" in r}
    assert {("fp32", "cudnn-ieee"), ("fp32", "cudnn-tf32"), ("bf16", "cudnn"), ("fp32", "triton")} <= variants
    assert bench["config"]["dry_run"] is True and bench["config"]["hbm_tbps"] > 0
    step = part("d")["presets"][0]
    assert step["comparison"]["ok"] and all(v > 0 for v in step["tokens_per_s"].values())
    pretrain = part("e")
    assert pretrain["steps"] == 2 and math.isfinite(pretrain["valid"]["ppl"]) and pretrain["tokens_per_s_median"] > 0


def test_without_cuda_every_part_is_skipped_with_the_reason(tmp_path, monkeypatch):
    """Not a dry run and no GPU: nothing runs; each part says why; the check does not fail."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([str(tmp_path), "--parts", "a", "e"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("a", "e"):
        assert summary["parts"][key]["status"] == "skipped"
        assert "no CUDA device" in summary["parts"][key]["reason"]


@pytest.mark.parametrize("code, timeout, reason", [
    ("import sys; sys.exit(3)", 30, "exit status 3"),
    ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])", 2, "timed out"),
])
def test_a_failing_or_hanging_part_is_recorded_and_ended(tmp_path, monkeypatch, code, timeout, reason):
    """A part that exits non-zero or outlives its timeout (with a child of its own, which is
    ended with it) becomes a failed record with the reason; the next part still runs."""
    monkeypatch.setitem(gpu_check.PARTS, "a", ("a.json", [sys.executable, "-c", code], timeout, timeout))
    monkeypatch.setitem(gpu_check.PARTS, "b", ("b.json", [sys.executable, "-c", "import sys; open(sys.argv[2], 'w')"
                                                          ".write('{\"status\": \"ok\"}')"], 30, 30))
    monkeypatch.setattr(gpu_check, "unavailable", lambda key, env, dry_run: None)
    assert gpu_check.main([str(tmp_path), "--parts", "a", "b"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["parts"]["a"]["status"] == "failed" and reason in summary["parts"]["a"]["reason"]
    assert summary["parts"]["b"]["status"] == "ok"
    assert not _processes_running("time.sleep(60)"), "the timed-out part's child is still running"


def _processes_running(text: str) -> list:
    """Pids whose command line contains ``text`` (from /proc; no pgrep needed)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:  # the process ended meanwhile
            pass
    return found
