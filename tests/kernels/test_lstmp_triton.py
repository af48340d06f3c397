"""The Triton LSTMP against the float64 plain-autograd reference.

Without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set below before
the kernel modules are imported); on a CUDA machine the same tests run the compiled kernels on
the GPU, and the CUDA-graph test runs too. Sizes are small: the interpreter is slow.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

import elmo_dist_kernels.lstmp_triton as lt  # noqa: E402
from tests.kernels.reference import lstmp_reference  # noqa: E402

if not ON_GPU and not lt.INTERPRETED:
    # Imported earlier in this process without the interpreter (e.g. through elmo_dist):
    # triton.jit decides at import time, so import the kernel modules again.
    for _name in ("lstmp_triton_kernels", "lstmp_triton_launch", "lstmp_triton_graphs", "lstmp_triton"):
        importlib.reload(importlib.import_module(f"elmo_dist_kernels.{_name}"))

import elmo_dist_kernels.lstmp_triton_launch as launch  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")

# Per dtype: |kernel - reference| <= atol * max|reference| + rtol * |reference|, elementwise.
# atol is scaled by the tensor's largest magnitude because the weight gradients sum over all
# B*T rows and grow with the batch, unlike the outputs. bf16: inputs, m, out and the xw gradient
# are bf16 (the interpreter truncates fp32 -> bf16 where a GPU rounds to nearest), so errors
# of a few bf16 ulps (2^-8 = 0.4%) accumulate over the steps.
TOLERANCES = {
    torch.float32: dict(atol=2e-6, rtol=2e-5),
    torch.bfloat16: dict(atol=3e-2, rtol=6e-2),
}
CELL_CLIP, PROJ_CLIP = 0.5, 0.3  # small enough that many values are clipped with these inputs
SHAPES = [(3, 4, 5, 3), (5, 3, 12, 7)]  # (B, T, H, P), none a power of two


def assert_matches(name: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """Elementwise check against the table; the message says how many, where, and NaN/inf."""
    tol = TOLERANCES[dtype]
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = want.abs().max().item() or 1.0
    diff = (got - want).abs()
    bad = ~(diff <= tol["atol"] * scale + tol["rtol"] * want.abs())  # NaN counts as bad
    if bad.any():
        where = bad.nonzero()[:5].tolist()
        raise AssertionError(
            f"{name} ({dtype}): {int(bad.sum())} of {bad.numel()} elements differ; first at {where}; "
            f"max |diff| {diff[~diff.isnan()].max().item() if (~diff.isnan()).any() else float('nan'):.3e} "
            f"(scale {scale:.3e}, atol {tol['atol']}, rtol {tol['rtol']}); "
            f"kernel NaN {int(got.isnan().sum())} inf {int(got.isinf().sum())}, "
            f"reference NaN {int(want.isnan().sum())} inf {int(want.isinf().sum())}")


def make_inputs(B, T, H, P, dtype, with_mask, seed):
    """Inputs rounded to dtype, on DEVICE; mask right-padded with a different length per row."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(DEVICE)

    tensors = dict(xw=randn(B, T, 4 * H, scale=1.5), w_rec=randn(P, 4 * H, scale=0.6),
                   w_proj=randn(H, P, scale=0.6), h0=randn(B, P, scale=0.3), c0=randn(B, H, scale=0.5))
    mask = None
    if with_mask:
        lengths = torch.arange(B) % T + 1  # 1, 2, .., T, 1, ..: rows of every length
        lengths[0] = T
        mask = (torch.arange(T)[None, :] < lengths[:, None]).to(DEVICE)
    return tensors, mask


def run_both(tensors, mask, cell_clip, proj_clip, reverse, dtype, seed, **kernel_kwargs):
    """Forward and backward of the kernel and of the float64 reference, same upstream grads."""
    names = ("xw", "w_rec", "w_proj", "h0", "c0")
    ins = [tensors[n].clone().requires_grad_() for n in names]
    outs = lt.lstmp_sequence(*ins, mask=mask, cell_clip=cell_clip, proj_clip=proj_clip, reverse=reverse,
                             **kernel_kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    grads = [torch.randn(o.shape, generator=gen).to(dtype).to(DEVICE) for o in outs]
    torch.autograd.backward(outs, grads)

    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    ref_outs = lstmp_reference(*ref_ins, mask=mask, cell_clip=cell_clip, proj_clip=proj_clip, reverse=reverse)
    torch.autograd.backward(ref_outs, [g.double() for g in grads])
    got = dict(zip(("out", "h_T", "c_T"), outs), **{f"d_{n}": t.grad for n, t in zip(names, ins)})
    want = dict(zip(("out", "h_T", "c_T"), ref_outs), **{f"d_{n}": t.grad for n, t in zip(names, ref_ins)})
    return got, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}H{}P{}".format(*s))
def test_matches_reference(shape, with_mask, reverse, clip, dtype):
    seed = hash((shape, with_mask, reverse, clip)) % 2**31
    tensors, mask = make_inputs(*shape, dtype, with_mask, seed)
    cell_clip, proj_clip = (CELL_CLIP, PROJ_CLIP) if clip else (None, None)
    got, want = run_both(tensors, mask, cell_clip, proj_clip, reverse, dtype, seed)
    if clip:  # the clips really bind somewhere, so their gradient masks are exercised
        assert (want["out"].abs() == PROJ_CLIP).any() and (want["c_T"].abs() == CELL_CLIP).any()
    if with_mask:  # padded positions output exactly 0 and get no xw gradient
        pad = ~mask
        assert (got["out"][pad] == 0).all() and (got["d_xw"][pad] == 0).all()
    for name in want:
        assert_matches(name, got[name], want[name], dtype)
    assert got["out"].dtype == dtype and got["h_T"].dtype == dtype and got["d_w_rec"].dtype == dtype


@pytest.mark.parametrize("options, split", [(dict(), False), (dict(with_mask=True, reverse=True, clip=True), True)],
                         ids=["plain-nosplit", "all-splitk"])
def test_many_tiles(monkeypatch, options, split):
    """Several programs per grid axis, several K chunks per loop and split-K with its reduce
    kernels (the GPU tiling), which the interpreter's one-tile default never reaches: 16-wide
    tiles on B=20, H=40, P=33; split-K cuts K = H into 2 parts and K = 4H into 3, and its reduce
    kernels run on their own 8 x 32 tiles (3 x 2 programs, where the matmuls have 2 x 3)."""
    B, T, H, P = 20, 3, 40, 33
    splits = (*launch.split_k(H, 2, 16), *launch.split_k(4 * H, 3, 16)) if split else ()
    tiles = launch.Tiles(16, 16, 16, 16, 4, 4, *splits, reduce_b=8, reduce_p=32)
    assert not split or (tiles.fwd_split, tiles.bwd_split) == (2, 3)
    monkeypatch.setattr(launch, "_choose_tiles", lambda B, H, P, device: tiles)
    dtype = torch.float32
    tensors, mask = make_inputs(B, T, H, P, dtype, options.get("with_mask", False), seed=7)
    clips = (CELL_CLIP, PROJ_CLIP) if options.get("clip") else (None, None)
    got, want = run_both(tensors, mask, *clips, options.get("reverse", False), dtype, seed=7)
    for name in want:
        assert_matches(name, got[name], want[name], dtype)


def test_cuda_graphs_flag_is_ignored_off_cuda():
    if ON_GPU:
        pytest.skip("covered by test_cuda_graphs_match_eager on a GPU")
    tensors, mask = make_inputs(3, 4, 5, 3, torch.float32, True, seed=3)
    got, want = run_both(tensors, mask, None, None, False, torch.float32, seed=3, use_cuda_graphs=True)
    for name in want:
        assert_matches(name, got[name], want[name], torch.float32)


def test_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setattr(lt, "INTERPRETED", False)
    tensors, _ = make_inputs(2, 2, 3, 2, torch.float32, False, seed=0)
    cpu = {k: v.cpu() for k, v in tensors.items()}
    with pytest.raises(RuntimeError, match="needs a CUDA device") as info:
        lt.lstmp_sequence(*cpu.values())
    message = str(info.value)
    assert "\n" not in message and "TRITON_INTERPRET=1" in message and "torch implementation" in message


def test_bad_shape_is_named():
    tensors, _ = make_inputs(2, 2, 3, 2, torch.float32, False, seed=0)
    tensors["w_proj"] = tensors["w_proj"][:2]
    with pytest.raises(ValueError, match="w_proj must be"):
        lt.lstmp_sequence(*tensors.values())


def _train_losses(lstmp_fn, steps: int = 20):
    """A tiny biLM, as ELMo trains one: shared embeddings -> a forward and a reverse LSTMP ->
    shared softmax, loss the mean of the two directions; Adam on a fixed padded batch."""
    V, E, H, P, B, T = 13, 6, 10, 5, 4, 4
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen) * 0.4

    params = dict(emb=randn(V, E), w_out=randn(P, V))
    for d in ("fwd", "rev"):
        bias = torch.zeros(4 * H)
        bias[H:2 * H] = 1.0  # the forget bias, as in bilm-tf
        params.update({f"{d}_w_in": randn(E, 4 * H), f"{d}_bias": bias, f"{d}_w_rec": randn(P, 4 * H),
                       f"{d}_w_proj": randn(H, P)})
    params = {k: v.to(DEVICE).requires_grad_() for k, v in params.items()}
    tokens = torch.randint(0, V, (B, 1), generator=gen)
    for _ in range(T + 1):  # a learnable sequence: next = (3 * token + 1) mod V
        tokens = torch.cat([tokens, (3 * tokens[:, -1:] + 1) % V], dim=1)
    tokens = tokens.to(DEVICE)  # (B, T + 2): position 0 and T + 1 are only targets
    mask = (torch.arange(T)[None, :] < torch.tensor([4, 3, 4, 2])[:, None]).to(DEVICE)
    inputs = tokens[:, 1:-1]
    targets = dict(fwd=tokens[:, 2:], rev=tokens[:, :-2])
    opt = torch.optim.Adam(params.values(), lr=0.05)
    losses = []
    for _ in range(steps):
        loss = 0.0
        for d in ("fwd", "rev"):
            xw = params["emb"][inputs] @ params[f"{d}_w_in"] + params[f"{d}_bias"]  # (B, T, 4H)
            h0, c0 = torch.zeros(B, P, device=DEVICE), torch.zeros(B, H, device=DEVICE)
            out, _, _ = lstmp_fn(xw, params[f"{d}_w_rec"], params[f"{d}_w_proj"], h0, c0, mask=mask,
                                 cell_clip=3.0, proj_clip=3.0, reverse=d == "rev")
            logits = out @ params["w_out"]  # (B, T, V)
            loss = loss + 0.5 * torch.nn.functional.cross_entropy(logits[mask], targets[d][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_tracks_reference():
    """20 Adam steps of a tiny biLM from one init, fp32: the loss with the kernel stays within
    1e-4 (relative) of the loss with the reference at every step, and the model learns (the
    final loss is below half the first)."""
    kernel = _train_losses(lt.lstmp_sequence)
    reference = _train_losses(lstmp_reference)
    for step, (k, r) in enumerate(zip(kernel, reference)):
        assert abs(k - r) <= 1e-4 * abs(r), f"step {step}: kernel loss {k:.6f} vs reference {r:.6f}"
    assert kernel[-1] < 0.5 * kernel[0], f"no learning: {kernel[0]:.3f} -> {kernel[-1]:.3f}"
