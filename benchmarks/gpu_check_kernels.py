"""gpu_check parts a and b: the kernel tests on CUDA, and the kernel at the real sizes.

    python -m benchmarks.gpu_check_kernels tests --out F [--dry-run]
    python -m benchmarks.gpu_check_kernels large --out F [--dry-run]

``large``: for each size and dtype, with mask, both clips and reverse on, the kernel's forward
(out, h_T, c_T) and every gradient (xw, w_rec, w_proj, h0, c0) against the float64 reference of
tests/kernels/reference.py, as ||kernel - ref|| / ||ref|| per tensor (limits in REL_LIMIT, per
dtype; NaN never passes); the same call again on poisoned free memory, bit-identical to the
first (a moving result is a race or an unwritten output); the CUDA-graph path, bit-identical to
eager on capture and on replay; and a NaN probe: a NaN put into one row at one step must show
in that row from that step on, and nowhere else, as in the reference. The dry run does all of
it on CPU under the interpreter at tiny sizes (graphs are ignored off CUDA: recorded as such).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SIZES = {"original": (128, 20, 4096, 512), "small": (128, 20, 1024, 128), "odd": (37, 13, 1000, 129)}
DRY_SIZES = {"tiny": (3, 4, 12, 5), "odd": (5, 3, 9, 6)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# ||kernel - ref|| / ||ref|| limits, (forward outputs, gradients). fp32 is IEEE throughout: far
# under 1e-3 (METHOD.md). bf16 forward: a few bf16 ulps. bf16 gradients pass through bf16 dz and
# dh_raw every step, and a clip whose rounded input lands on the other side of its boundary
# flips a whole gradient entry: 2-8% was seen under the interpreter (which truncates fp32 ->
# bf16 where a GPU rounds to nearest) at B=16-32, T=8-10, H=128-256, P=32-64, clips 1 / 0.25.
# A wrong index or a race gives errors of order 1.
REL_LIMIT = {"fp32": (1e-4, 1e-4), "bf16": (2e-2, 1e-1)}
CELL_CLIP, PROJ_CLIP = 1.0, 0.25  # tight enough that both clips bind on these inputs
NAMES = ("xw", "w_rec", "w_proj", "h0", "c0")


def kernel_tests(out: Path, dry_run: bool) -> dict:
    """pytest tests/kernels (on CUDA: compiled; dry run: a quick subset under the interpreter)."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        if dry_run:
            cmd += ["-k", "test_many_tiles and plain or test_reuse_waits_for_the_last_use or test_clips_keep_nan"]
        else:
            cmd += _xdist_args()
        t0 = time.time()
        rc = subprocess.run(cmd, cwd=REPO).returncode
        cases = _junit_cases(junit) if junit.exists() else []
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    gpu_only = [c["id"] for c in cases if "cuda_graphs_match_eager" in c["id"] or "on_cuda" in c["id"]]
    ran_gpu_only = all(c["outcome"] == "passed" for c in cases if c["id"] in gpu_only) and bool(gpu_only)
    ok = rc == 0 and counts["passed"] > 0 and (dry_run or ran_gpu_only)
    reason = None if ok else (f"pytest exit status {rc}; {counts['failed']} failed, {counts['error']} errors"
                              + ("" if dry_run or ran_gpu_only else "; the CUDA-graph tests did not pass"))
    return dict(status="ok" if ok else "failed", reason=reason, command=" ".join(cmd[1:]), counts=counts,
                seconds=round(time.time() - t0, 1), gpu_only_tests_passed=ran_gpu_only,
                not_passed=[c for c in cases if c["outcome"] not in ("passed", "skipped")][:30],
                skipped=[c for c in cases if c["outcome"] == "skipped"])


def _xdist_args():
    """Four workers when pytest-xdist is there: the kernels compile in parallel on the CPUs."""
    import importlib.util
    return ["-n", "4"] if importlib.util.find_spec("xdist") is not None else []


def _junit_cases(path: Path):
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag if tag != "failure" else "failed", (node.get("message") or "")[:300]
        cases.append(dict(id=f"{case.get('classname')}::{case.get('name')}", outcome=outcome, message=message))
    return cases


def _inputs(B, T, H, P, dtype, device, seed):
    """Random inputs rounded to dtype, scaled as a trained layer's are; right-padded mask."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(device)

    tensors = dict(xw=randn(B, T, 4 * H, scale=1.0), w_rec=randn(P, 4 * H, scale=2 * P ** -0.5),
                   w_proj=randn(H, P, scale=2 * H ** -0.5), h0=randn(B, P, scale=0.1), c0=randn(B, H, scale=0.5))
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(device)
    grads = [randn(B, T, P, scale=1.0), randn(B, P, scale=1.0), randn(B, H, scale=1.0)]
    return tensors, mask, grads


def _run(fn, tensors, mask, grads, **kwargs):
    """Forward and backward of fn; {name: tensor} for the outputs and every input gradient."""
    ins = [tensors[n].clone().requires_grad_() for n in NAMES]
    outs = fn(*ins, mask=mask, cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP, reverse=True, **kwargs)
    torch.autograd.backward(outs, [g.to(outs[0].dtype) for g in grads])
    return dict(zip(("out", "h_T", "c_T"), (o.detach() for o in outs)), **{f"d_{n}": t.grad for n, t in zip(NAMES, ins)})


def _poison_free_memory(device, nbytes: int) -> None:
    """Hands the allocator one NaN-filled block of ``nbytes`` (the first run's peak) to carve the
    next run's buffers from, so that an output the kernel fails to write shows as NaN."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.full((nbytes // 4 + 1,), float("nan"), device=device)


def _peak_bytes_of(fn, device):
    """fn()'s result and the most memory it held above what was allocated before."""
    if device.type != "cuda":
        return fn(), 0
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    return result, torch.cuda.max_memory_allocated() - before


def _bitwise(a: dict, b: dict) -> list:
    """Names of the tensors whose bits differ (NaN included)."""
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16}
    return [k for k in a if not torch.equal(a[k].view(ints[a[k].dtype]), b[k].view(ints[b[k].dtype]))]


def one_case(lt, reference, size, dims, dtype_name, device, graphs: bool) -> dict:
    dtype = DTYPES[dtype_name]
    B, T, H, P = dims
    tensors, mask, grads = _inputs(B, T, H, P, dtype, device, seed=zlib.crc32(f"{size}-{dtype_name}".encode()))
    t0 = time.time()
    first, peak = _peak_bytes_of(lambda: _run(lt.lstmp_sequence, tensors, mask, grads, use_cuda_graphs=False),
                                 device)
    _poison_free_memory(device, peak)
    second = _run(lt.lstmp_sequence, tensors, mask, grads, use_cuda_graphs=False)
    seconds = time.time() - t0
    ref = _run(reference, {k: v.double() for k, v in tensors.items()}, mask, [g.double() for g in grads])
    rel = {k: ((first[k].double() - ref[k]).norm() / ref[k].norm().clamp_min(1e-30)).item() for k in ref}
    limits = {k: REL_LIMIT[dtype_name][k.startswith("d_")] for k in rel}
    bad = [k for k, e in rel.items() if not e <= limits[k]]  # NaN fails
    row = dict(size=size, B=B, T=T, H=H, P=P, dtype=dtype_name, rel_err=rel, limit=limits,
               fraction_cell_clipped=(ref["c_T"].abs() >= CELL_CLIP).double().mean().item(),
               fraction_out_clipped=(ref["out"].abs() >= PROJ_CLIP).double().mean().item(),
               not_within_limit=bad, run_twice_differs=_bitwise(first, second), seconds_two_runs=round(seconds, 2))
    if graphs:
        lt.release_cuda_graphs()
        captured = _run(lt.lstmp_sequence, tensors, mask, grads, use_cuda_graphs=True)
        replayed = _run(lt.lstmp_sequence, tensors, mask, grads, use_cuda_graphs=True)
        row["graphs_differ_from_eager"] = _bitwise(first, captured) + [f"replay:{k}" for k in _bitwise(first, replayed)]
        lt.release_cuda_graphs()
    row["ok"] = not bad and not row["run_twice_differs"] and not row.get("graphs_differ_from_eager")
    return row


def nan_probe(lt, reference, dims, dtype_name, device, graphs: bool) -> dict:
    """A NaN in xw[1, t0, 0] (reverse off): row 1 is NaN from t0 on, in the kernel as in torch."""
    dtype = DTYPES[dtype_name]
    B, T, H, P = dims
    t0 = min(2, T - 1)
    tensors, _, _ = _inputs(B, T, H, P, dtype, device, seed=3)
    tensors["xw"][1, t0, 0] = float("nan")
    args = [tensors[n] for n in NAMES]
    got = lt.lstmp_sequence(*args, cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP, use_cuda_graphs=graphs)
    want = reference(*(a.double() for a in args), cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP)
    same = all(torch.equal(g.isnan(), w.isnan()) for g, w in zip(got, want))
    shows = bool(got[0][1, t0:].isnan().all()) and bool(got[1][1].isnan().all())
    lt.release_cuda_graphs()
    return dict(dtype=dtype_name, graphs=graphs, nan_where_reference_has_it=same, nan_reaches_row=shows,
                ok=same and shows)


def large_shapes(out: Path, dry_run: bool) -> dict:
    sys.path.insert(0, str(REPO))
    import elmo_dist_kernels.lstmp_triton as lt
    from tests.kernels.reference import lstmp_reference

    device = torch.device("cpu" if dry_run else "cuda")
    graphs = device.type == "cuda"
    cases, probes = [], []
    for size, dims in (DRY_SIZES if dry_run else SIZES).items():
        for dtype_name in DTYPES:
            try:
                cases.append(one_case(lt, lstmp_reference, size, dims, dtype_name, device, graphs))
            except Exception as err:  # noqa: BLE001 - record and go on to the next case
                cases.append(dict(size=size, dtype=dtype_name, ok=False, error=f"{type(err).__name__}: {err}"[:500]))
            print(json.dumps(cases[-1]), flush=True)
    probe_dims = DRY_SIZES["tiny"] if dry_run else SIZES["small"]
    for dtype_name in DTYPES:
        for use_graphs in ([False, True] if graphs else [False]):
            probes.append(nan_probe(lt, lstmp_reference, probe_dims, dtype_name, device, use_graphs))
    failed = [f"{c['size']} {c['dtype']}" for c in cases if not c["ok"]] + [
        f"NaN probe {p['dtype']}{' graphs' if p['graphs'] else ''}" for p in probes if not p["ok"]]
    return dict(status="failed" if failed else "ok", reason=("failed: " + ", ".join(failed)) if failed else None,
                options=dict(mask=True, cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP, reverse=True),
                graphs_checked=graphs or "not off CUDA (the flag is ignored there)", cases=cases, nan_probes=probes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["tests", "large"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    result = (kernel_tests if args.what == "tests" else large_shapes)(args.out, args.dry_run)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.what}: {result['status']} {result.get('reason') or ''}")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
