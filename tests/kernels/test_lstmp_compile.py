"""The compiled path without a GPU: every kernel, launched as the launcher launches it, compiles
for sm_90 with no register spills, and its clips keep NaN in the machine code.

"As the launcher launches it": the step loops run with recording stand-ins for the kernels and
real (never written) CPU tensors of the full size, and each recorded launch goes through the
JIT's own binder, so the compile sees what a launch on a GPU would: the tiles, warps and
constexprs, and the specialization (16-byte alignment of every pointer, divisibility by 16 of
the integer arguments, ints equal to 1 as constants). Compiling from a hand-written signature
without those hints checked code that never runs (140-154 registers there, against ~100).

Without a GPU this uses triton internals (``create_function_from_signature``,
``JITFunction._pack_args``) as they are in triton 3.9, the CPU machines' pin; if they move, the
test fails there. On a GPU it compiles through ``JITFunction.warmup`` for the device at hand.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import tempfile
from types import SimpleNamespace

import pytest
import torch
import triton

from tests.kernels.test_lstmp_triton import launch

KERNELS = ("_lstmp_fwd_cell_kernel", "_lstmp_fwd_proj_kernel", "_lstmp_fwd_proj_reduce_kernel",
           "_lstmp_bwd_cell_kernel", "_lstmp_bwd_rec_kernel", "_lstmp_bwd_rec_reduce_kernel")
CLIPPING = {"_lstmp_fwd_cell_kernel", "_lstmp_fwd_proj_reduce_kernel"}  # fwd proj clips only when SPLIT_K == 1


def _tool(name: str):
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.access(path, os.X_OK) else None


def _jit_kernels_module():
    """A second copy of lstmp_triton_kernels.py whose kernels are JITFunctions (compilable),
    whatever TRITON_INTERPRET says for the copy the other tests run."""
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        path = os.path.join(os.path.dirname(launch.__file__), "lstmp_triton_kernels.py")
        spec = importlib.util.spec_from_file_location("_lstmp_triton_kernels_jit", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def recorded_launches(monkeypatch, B, T, H, P, dtype):
    """{kernel name: (args, kwargs)} of the first launch of each kernel by forward_steps and
    backward_steps at this size, mask and clips 3 on, on a 132-SM device (H100 / H200)."""
    calls = {}

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.setdefault(self.name, (args, kwargs))

    for name in KERNELS:
        monkeypatch.setattr(launch, name, Recorder(name))
    monkeypatch.setattr(launch, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=132))
    cfg = launch.step_config(B, H, P, dtype, torch.device("cuda"), 3.0, 3.0, False)
    cfg = cfg._replace(dot_dtype=launch._TL_DTYPE[dtype])  # the GPU's dot dtype, not the interpreter's
    empty = dict(dtype=dtype, device="cpu")
    xw, grad_out = torch.empty(B, T, 4 * H, **empty), torch.empty(B, T, P, **empty)
    w_rec, w_proj = torch.empty(P, 4 * H, **empty), torch.empty(H, P, **empty)
    keep = torch.empty(B, T, dtype=torch.uint8)
    fwd, bwd = launch.alloc_forward(B, T, H, P, dtype, "cpu"), launch.alloc_backward(B, T, H, P, dtype, "cpu")
    scratch = launch.alloc_scratch(cfg.tiles, B, P, "cpu")
    launch.forward_steps(xw, w_rec, w_proj, keep, fwd, scratch, cfg)
    launch.backward_steps(grad_out, w_rec, w_proj, keep, fwd, bwd, scratch, cfg)
    return calls


def compile_like_launch(kernel, args, kwargs):
    """What JITFunction.run compiles for this launch on sm_90: on a GPU, the JIT's own warm-up
    (compiles, launches nothing); without one, its binder and compile call, minus the driver."""
    if torch.cuda.is_available():
        return kernel.warmup(*args, grid=(1,), **kwargs)
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    assert any(["tt.divisibility", 16] in a for a in attrs.values()), "no alignment hints reached the compile"
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def resource_usage(cuobjdump: str, cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    found = dict(re.findall(r"(REG|STACK):(\d+)", usage))
    assert set(found) == {"REG", "STACK"}, f"no resource usage in {usage!r}"
    return {k: int(v) for k, v in found.items()}


SIZES = {"original": (128, 20, 4096, 512), "small": (128, 20, 1024, 128), "B3": (3, 20, 4096, 512)}
CASES = [("original", torch.float32), ("original", torch.bfloat16), ("small", torch.bfloat16), ("B3", torch.bfloat16)]


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
@pytest.mark.parametrize("size, dtype", CASES, ids=[f"{s}-{str(d)[6:]}" for s, d in CASES])
def test_kernels_compile_for_sm90_without_spills(monkeypatch, size, dtype):
    """Each kernel of the step loops, at the original, small and B=3 sizes: no stack (no
    spills) in its sm_90 machine code; the clips use NaN-propagating min/max (min.NaN.f32),
    never the plain ones. The registers each kernel takes are printed (pytest -s)."""
    cuobjdump = _tool("cuobjdump")
    if cuobjdump is None or _tool("ptxas") is None:
        pytest.skip("triton's bundled ptxas / cuobjdump are missing")
    calls = recorded_launches(monkeypatch, *SIZES[size], dtype)
    assert set(calls) == set(KERNELS), f"launched {sorted(calls)}: the reduce kernels need split-K"
    kernels = _jit_kernels_module()
    for name, (args, kwargs) in calls.items():
        compiled = compile_like_launch(getattr(kernels, name), args, kwargs)
        usage = resource_usage(cuobjdump, compiled.asm["cubin"])
        print(f"{size} {dtype} {name}: {usage['REG']} registers, {kwargs['num_warps']} warps")
        assert usage["STACK"] == 0, f"{name} ({size}, {dtype}) spills registers: {usage}"
        float_min_max = set(re.findall(r"\b(?:min|max)(?:\.[A-Za-z0-9]+)*\.f32\b", compiled.asm["ptx"]))
        if name in CLIPPING:
            assert float_min_max == {"min.NaN.f32", "max.NaN.f32"}, f"{name}: clip ops {float_min_max}"
        else:
            assert not float_min_max, f"{name}: unexpected float min/max {float_min_max}"
