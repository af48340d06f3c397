"""GPU benchmark: one LSTMP layer, forward+backward, Triton kernel vs cuDNN vs a per-step loop.

For the ELMo ``original`` (B=128, T=20, H=4096, P=512) and ``small`` (H=1024, P=128) sizes, in
fp32 and bf16, each variant runs a whole layer from its input x (B, T, P), x requiring grad:
  triton         x @ W_in + b once, then elmo_dist_kernels.lstmp_triton.lstmp_sequence (clips 3)
  triton+graphs  the same with the step loops replayed as CUDA graphs
  cudnn          nn.LSTM(P, H, proj_size=P, batch_first=True): no clipping, so it does less.
                 In fp32 two rows: cudnn-ieee (TF32 off, like the kernel's IEEE fp32, the row
                 the speedup is taken against) and cudnn-tf32 (torch's default for cuDNN)
  loop           a per-step loop of torch ops as AllenNLP's LstmCellWithProjection runs it
                 (input and recurrent matmuls every step, clips 3), autograd backward
Measured: median forward (no grad) and forward+backward time over --iters runs after --warmup
(CUDA events), and the peak memory allocated above what existed before the variant first ran
(so buffers a variant caches, such as the CUDA-graph instances, count; gradients are freed
between variants). The floor is the weight reads: every step reads w_rec and w_proj,
(P*4H + H*P) * bytes, once forward and once backward, at the device's memory bandwidth
(--hbm-tbps; by default from the device name: 4.8 TB/s on an H200, 3.35 on an H100 SXM).

    python benchmarks/bench_lstmp_gpu.py [--sizes original small] [--dtypes fp32 bf16] [--out F]
    TRITON_INTERPRET=1 python benchmarks/bench_lstmp_gpu.py --dry-run --out F   # CPU, tiny size
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SIZES = {"original": dict(B=128, T=20, H=4096, P=512), "small": dict(B=128, T=20, H=1024, P=128),
         "tiny": dict(B=3, T=3, H=12, P=5)}  # tiny: the --dry-run on CPU
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VARIANTS = ("triton", "triton+graphs", "cudnn", "loop")
# Memory bandwidth by device name (vendor datasheets, TB/s), for the weight-read floor.
HBM_TBPS = {"H200": 4.8, "H100": 3.35, "A100": 2.04}
CLIP = 3.0  # cell and projection clip of the published ELMo models
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES),
                   help="layer sizes to run (default: all)")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                   help="dtypes to run (default: all)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="implementations to run (default: all)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    p.add_argument("--iters", type=int, default=20, help="timed runs; the median is reported (default 20)")
    p.add_argument("--hbm-tbps", type=float, default=None,
                   help="memory bandwidth in TB/s for the weight-read floor (default: by device name, "
                        f"{HBM_TBPS}; 3.35 for others)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU under TRITON_INTERPRET=1, the tiny size, one run per variant: checks the script")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results path (default benchmarks/results/gpu/lstmp_<device>.json)")
    return p.parse_args(argv)


def make_layers(B, T, H, P, dtype, device):
    """{variant: (layer, params)}: layer maps x (B, T, P) to out (B, T, P); params are the
    tensors whose gradients it computes. triton, triton+graphs and loop share their weights."""
    from elmo_dist_kernels.lstmp_triton import lstmp_sequence

    gen = torch.Generator(device="cpu").manual_seed(0)

    def param(*shape, scale):
        return (torch.randn(*shape, generator=gen) * scale).to(device, dtype).requires_grad_()

    w_in, w_rec = param(P, 4 * H, scale=P ** -0.5), param(P, 4 * H, scale=P ** -0.5)
    w_proj = param(H, P, scale=H ** -0.5)
    bias = torch.zeros(4 * H)
    bias[H:2 * H] = 1.0  # forget bias, gate order (i, f, o, j)
    bias = bias.to(device, dtype).requires_grad_()
    h0, c0 = torch.zeros(B, P, device=device, dtype=dtype), torch.zeros(B, H, device=device, dtype=dtype)
    ours = [w_in, bias, w_rec, w_proj]

    def triton_layer(x, graphs):
        xw = torch.addmm(bias, x.reshape(B * T, P), w_in).view(B, T, 4 * H)
        return lstmp_sequence(xw, w_rec, w_proj, h0, c0, cell_clip=CLIP, proj_clip=CLIP,
                              use_cuda_graphs=graphs)[0]

    def loop_layer(x):
        h, c, outs = h0, c0, []
        for t in range(T):
            z = x[:, t] @ w_in + bias + h @ w_rec  # (B, 4H)
            i, f, o, j = z.split(H, dim=1)
            c = torch.clamp(torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j), -CLIP, CLIP)
            h = torch.clamp((torch.sigmoid(o) * torch.tanh(c)) @ w_proj, -CLIP, CLIP)
            outs.append(h)
        return torch.stack(outs, dim=1)

    cudnn = torch.nn.LSTM(P, H, proj_size=P, batch_first=True).to(device, dtype)
    state = (h0[None], c0[None])
    layers = {
        "triton": (lambda x: triton_layer(x, False), ours),
        "triton+graphs": (lambda x: triton_layer(x, True), ours),
        "cudnn": (lambda x: cudnn(x, state)[0], list(cudnn.parameters())),
        "loop": (loop_layer, ours),
    }
    return layers


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN and cuBLAS fp32 work on or off inside the block (the kernel's fp32 is IEEE)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def variant_rows(variants, dtype_name):
    """(row name, layer name, TF32 on): cuDNN gets an IEEE and a TF32 row in fp32."""
    rows = []
    for name in variants:
        if name == "cudnn" and dtype_name == "fp32":
            rows += [("cudnn-ieee", "cudnn", False), ("cudnn-tf32", "cudnn", True)]
        else:
            rows.append((name, name, False))
    return rows


def time_ms(fn, warmup, iters, device):
    """Median ms of fn over iters runs after warmup ones: CUDA events on a GPU, else a host clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def free_grads(params, x) -> None:
    for p in (*params, x):
        p.grad = None


def measure(layer, params, x, grad, warmup, iters):
    """(forward ms, forward+backward ms, peak MB above the memory held before the first run;
    None off CUDA). The gradients are freed before and after, so no variant's count another's."""
    device = x.device
    free_grads(params, x)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        free_grads(params, x)
        layer(x).backward(grad)

    fwd = time_ms(forward, warmup, iters, device)
    fwd_bwd = time_ms(forward_backward, warmup, iters, device)
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if device.type == "cuda" else None
    free_grads(params, x)
    return fwd, fwd_bwd, peak


def run_case(size, dtype_name, args, device):
    from elmo_dist_kernels.lstmp_triton import release_cuda_graphs

    dims = SIZES[size]
    B, T, H, P = dims["B"], dims["T"], dims["H"], dims["P"]
    dtype = DTYPES[dtype_name]
    layers = make_layers(B, T, H, P, dtype, device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(B, T, P, generator=gen).to(device, dtype).requires_grad_()
    grad = torch.randn(B, T, P, generator=gen).to(device, dtype)
    weight_bytes = (P * 4 * H + H * P) * torch.finfo(dtype).bits // 8
    floor_fwd_ms = T * weight_bytes / (args.hbm_tbps * 1e12) * 1e3
    rows = {}
    with torch.no_grad(), tf32(False):
        reference = layers["loop"][0](x)
    for name, layer_name, use_tf32 in variant_rows(args.variants, dtype_name):
        layer, params = layers[layer_name]
        row = dict(size=size, dtype=dtype_name, variant=name, B=B, T=T, H=H, P=P, tf32=use_tf32,
                   floor_fwd_ms=floor_fwd_ms, floor_fwd_bwd_ms=2 * floor_fwd_ms)
        try:
            with tf32(use_tf32):
                row["fwd_ms"], row["fwd_bwd_ms"], row["peak_mb"] = measure(layer, params, x, grad, args.warmup,
                                                                           args.iters)
                if name.startswith("triton"):  # same weights and clips as the loop: a GPU sanity check
                    with torch.no_grad():
                        row["max_abs_diff_vs_loop"] = (layer(x).float() - reference.float()).abs().max().item()
        except RuntimeError as err:  # e.g. a cuDNN build without bf16 RNNs: record it, go on
            row["error"] = str(err).splitlines()[0]
        finally:
            free_grads(params, x)
            release_cuda_graphs()
        rows[name] = row
    baselines = {"cudnn": "cudnn-ieee" if dtype_name == "fp32" else "cudnn", "cudnn_tf32": "cudnn-tf32",
                 "loop": "loop"}
    for row in rows.values():
        for key, base in baselines.items():
            if "fwd_bwd_ms" in row and "fwd_bwd_ms" in rows.get(base, {}):
                row[f"speedup_vs_{key}"] = rows[base]["fwd_bwd_ms"] / row["fwd_bwd_ms"]
        if "fwd_bwd_ms" in row:
            row["x_floor"] = row["fwd_bwd_ms"] / row["floor_fwd_bwd_ms"]
    return list(rows.values())


def print_table(results):
    head = (f"{'size':9} {'dtype':5} {'variant':14} {'fwd ms':>8} {'fwd+bwd ms':>11} {'peak MB':>9} "
            f"{'vs cuDNN':>9} {'vs TF32':>8} {'vs loop':>8} {'x floor':>8}  notes")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['size']:9} {r['dtype']:5} {r['variant']:14} failed: {r['error']}")
            continue

        def ratio(key):
            return f"{r[key]:.2f}x" if key in r else "-"

        peak = f"{r['peak_mb']:9.1f}" if r["peak_mb"] is not None else f"{'-':>9}"
        notes = f"|out - loop| {r['max_abs_diff_vs_loop']:.1e}" if "max_abs_diff_vs_loop" in r else ""
        print(f"{r['size']:9} {r['dtype']:5} {r['variant']:14} {r['fwd_ms']:8.3f} {r['fwd_bwd_ms']:11.3f} "
              f"{peak} {ratio('speedup_vs_cudnn'):>9} {ratio('speedup_vs_cudnn_tf32'):>8} "
              f"{ratio('speedup_vs_loop'):>8} {r['x_floor']:7.1f}x  {notes}")
    print("vs cuDNN (IEEE fp32, or bf16) / vs TF32 (cuDNN fp32 with TF32) / vs loop: their fwd+bwd time "
          "over this row's (above 1 = this row is faster); x floor: fwd+bwd time over the weight-read floor.")


def provenance(argv, device):
    import triton

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cuda = device.type == "cuda"
    return dict(device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter, dry run)",
                torch=torch.__version__, triton=triton.__version__,
                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if cuda else None,
                # Each row's TF32 setting is in the row; these are torch's defaults outside them.
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                git_commit=git("rev-parse", "HEAD"),
                git_dirty=bool(git("status", "--porcelain")),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join(["python", os.path.relpath(sys.argv[0], REPO), *argv]))


def bandwidth_tbps(args, device) -> tuple:
    """(TB/s, where it came from) for the floor: --hbm-tbps, else the device name's entry."""
    if args.hbm_tbps is not None:
        return args.hbm_tbps, "--hbm-tbps"
    name = torch.cuda.get_device_name() if device.type == "cuda" else ""
    for key, tbps in HBM_TBPS.items():
        if key in name:
            return tbps, f"datasheet ({key})"
    return 3.35, f"not in the table ({name or 'no GPU'}): H100 SXM's figure"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if args.dry_run:
        if not interpreted:
            print("--dry-run runs the kernels under the Triton interpreter: set TRITON_INTERPRET=1.", file=sys.stderr)
            return 2
        device = torch.device("cpu")
        args.sizes, args.warmup, args.iters = ["tiny"], 0, 1
    else:
        if not torch.cuda.is_available():
            print("bench_lstmp_gpu.py needs a CUDA GPU and torch sees none; nothing was measured "
                  "(--dry-run checks the script on CPU).", file=sys.stderr)
            return 2
        if interpreted:
            print("unset TRITON_INTERPRET: the benchmark times the compiled kernels.", file=sys.stderr)
            return 2
        device = torch.device("cuda")
    args.hbm_tbps, hbm_source = bandwidth_tbps(args, device)
    results = [row for size in args.sizes for dtype in args.dtypes for row in run_case(size, dtype, args, device)]
    print_table(results)
    meta = provenance(argv, device)
    out = args.out or REPO / "benchmarks" / "results" / "gpu" / (
        "lstmp_" + re.sub(r"[^a-z0-9]+", "_", meta["device"].lower()).strip("_") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = dict(warmup=args.warmup, iters=args.iters, hbm_tbps=args.hbm_tbps, hbm_source=hbm_source, clip=CLIP,
                  dry_run=args.dry_run)
    out.write_text(json.dumps(dict(provenance=meta, config=config, results=results), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
