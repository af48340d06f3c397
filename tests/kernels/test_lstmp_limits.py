"""The Triton LSTMP at its edges: NaN through the clips, offsets past 2^31, sizes it refuses,
and the tiles and warps it picks for a GPU (checked with a mocked 132-SM device).

Like test_lstmp_triton.py (whose helpers and interpreter set-up this imports), the kernels run
under the Triton interpreter without CUDA and compiled on a GPU.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.kernels.reference import lstmp_reference
from tests.kernels.test_lstmp_triton import (
    CELL_CLIP, DEVICE, PROJ_CLIP, assert_matches, launch, lt, make_inputs)

NAMES = ("xw", "w_rec", "w_proj", "h0", "c0")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_clips_keep_nan(dtype):
    """A NaN in one row's input at t=1 reaches that row's outputs from t=1 on and its final
    state through both clips, exactly where the float64 reference (torch.clamp) has NaN; the
    other rows stay finite. Plain tl.minimum / tl.maximum would clip the NaN to +-clip on a
    GPU (and do under the triton 3.9 interpreter), hiding a diverged run."""
    tensors, _ = make_inputs(3, 4, 5, 3, dtype, False, seed=5)
    tensors["xw"][1, 1, 0] = float("nan")  # the i gate of unit 0, row 1, t = 1
    got = lt.lstmp_sequence(*tensors.values(), cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP)
    want = lstmp_reference(*(t.double() for t in tensors.values()), cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP)
    for name, g, w in zip(("out", "h_T", "c_T"), got, want):
        assert torch.equal(g.isnan().cpu(), w.isnan().cpu()), f"{name}: NaN where the reference has none, or none where it has"
    out = got[0].cpu()
    assert out[1, 1:].isnan().all() and out[1, 0].isfinite().all()
    assert out[[0, 2]].isfinite().all() and got[1][1].isnan().all()


def _wide_rows(B, T, H, P, dtype, row_stride):
    """xw, out, grad_out and dxw as (B, T, N) views of one allocation whose rows are
    ``row_stride`` elements apart: rows >= 2 start past 2^31 elements while the stride itself
    fits in int32 (as B*T*4H does at long T). Only the rows' pages are ever touched."""
    seg = dict(xw=4 * H, out=P, grad_out=P, dxw=4 * H)
    big = torch.empty((B - 1) * row_stride + T * sum(seg.values()), dtype=dtype, device=DEVICE)
    views, offset = {}, 0
    for name, n in seg.items():
        views[name] = big.as_strided((B, T, n), (row_stride, n, 1), offset)
        offset += T * n
    return views


def _run_steps(xw, out, grad_out, dxw, w_rec, w_proj, h0, c0, cfg):
    """The launcher's forward and backward loops into the given (B, T, N) tensors."""
    B, T, four_h = xw.shape
    H, P = four_h // 4, w_proj.shape[1]
    fwd = launch.alloc_forward(B, T, H, P, xw.dtype, xw.device)._replace(out=out)
    bwd = launch.alloc_backward(B, T, H, P, xw.dtype, xw.device)._replace(dxw=dxw)
    fwd.hs[0].copy_(h0)
    fwd.cs[0].copy_(c0)
    scratch = launch.alloc_scratch(cfg.tiles, B, P, xw.device)
    launch.forward_steps(xw, w_rec, w_proj, None, fwd, scratch, cfg)
    bwd.dh.zero_()
    bwd.dc.zero_()
    launch.backward_steps(grad_out, w_rec, w_proj, None, fwd, bwd, scratch, cfg)
    dw_rec, dw_proj = launch.weight_grads(fwd, bwd, False, True, True)
    return dict(out=out.clone(), h_T=fwd.hs[T].clone(), c_T=fwd.cs[T].clone(), d_xw=dxw.clone(),
                d_h0=bwd.dh.clone(), d_c0=bwd.dc.clone(), d_w_rec=dw_rec, d_w_proj=dw_proj)


def test_sequence_offsets_past_int32():
    """Rows of xw, out, grad_out and dxw that start past 2^31 elements are read and written
    where they are (int64 offsets): the same loops on compact tensors and on 2^30 + 64-strided
    views give bit-identical results, and the compact run matches the float64 reference.
    With int32 offsets, row 2 wraps to a negative offset (the interpreter then crashes)."""
    B, T, H, P = 3, 2, 4, 3
    dtype = torch.bfloat16  # 4 GiB of address space, a few pages of it touched
    tensors, _ = make_inputs(B, T, H, P, dtype, False, seed=9)
    grad_out = torch.randn(B, T, P, generator=torch.Generator().manual_seed(10)).to(dtype).to(DEVICE)
    cfg = launch.step_config(B, H, P, dtype, DEVICE, CELL_CLIP, PROJ_CLIP, False)
    wide = _wide_rows(B, T, H, P, dtype, row_stride=2 ** 30 + 64)
    assert wide["dxw"].storage_offset() + 2 * wide["dxw"].stride(0) >= 2 ** 31
    wide["xw"].copy_(tensors["xw"])
    wide["grad_out"].copy_(grad_out)
    weights = [tensors[n] for n in ("w_rec", "w_proj", "h0", "c0")]
    got = _run_steps(wide["xw"], wide["out"], wide["grad_out"], wide["dxw"], *weights, cfg)
    compact = _run_steps(tensors["xw"], torch.empty(B, T, P, dtype=dtype, device=DEVICE), grad_out,
                         torch.empty(B, T, 4 * H, dtype=dtype, device=DEVICE), *weights, cfg)
    for name in compact:
        assert torch.equal(got[name], compact[name]), f"{name}: strided rows differ from compact ones"

    ref_in = [tensors[n].double().requires_grad_() for n in NAMES]
    ref_out = lstmp_reference(*ref_in, cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP)
    ref_out[0].backward(grad_out.double())
    want = dict(zip(("out", "h_T", "c_T"), ref_out), **{f"d_{n}": t.grad for n, t in zip(NAMES, ref_in)})
    for name in want:
        assert_matches(name, compact[name], want[name], dtype)


def test_sizes_past_int32_are_refused():
    """Offsets that stay int32 (one step's (B, 4H) slice, w_rec, the partials, the mask) are
    guarded: such sizes raise a one-line ValueError naming the product, before any launch."""
    with pytest.raises(ValueError, match=r"B \* 4H .* over the kernels' int32 offsets") as info:
        launch.step_config(2 ** 19, 1024, 128, torch.float32, DEVICE, None, None, False)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"P \* 4H \(w_rec\)"):
        launch.step_config(2, 2 ** 17, 2 ** 12, torch.float32, DEVICE, None, None, False)
    B, T, H, P = 2 ** 16, 2 ** 15, 1, 1  # B * T = 2^31: the expanded tensors hold one element each
    one = torch.zeros(1, device=DEVICE)
    xw = one.expand(B, T, 4 * H)
    with pytest.raises(ValueError, match=r"B \* T = 2147483648 must be below 2\^31"):
        lt.lstmp_sequence(xw, one.expand(P, 4 * H), one.expand(H, P), one.expand(B, P), one.expand(B, H))


@pytest.fixture
def h100_sms(monkeypatch):
    """The GPU tile choice on a CPU: compiled kernels and a 132-SM device."""
    monkeypatch.setattr(launch, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=132))


@pytest.mark.parametrize("size, programs", [((128, 4096, 512), 256), ((128, 1024, 128), 128)],
                         ids=["original", "small"])
def test_reduce_kernels_spread_over_the_sms(h100_sms, size, programs):
    """The split-K reduce kernels get their own tiles: at least a program per SM at the original
    size (they had 16 with the matmul tiles) and 128 (the 8 x 16 minimum tile) at the small one
    (they had 4); every split is used, so the reduce kernels run."""
    B, H, P = size
    tiles = launch.step_config(B, H, P, torch.bfloat16, torch.device("cuda"), 3.0, 3.0, False).tiles
    assert tiles.fwd_split > 1 and tiles.bwd_split > 1
    grid = launch.reduce_grid(tiles, B, P)
    assert grid[0] * grid[1] == programs
    assert tiles.reduce_b * grid[0] >= B and tiles.reduce_p * grid[1] >= P


@pytest.mark.parametrize("B, warps", [(128, (8, 8)), (3, (4, 4))])
def test_warps_follow_the_tile(h100_sms, B, warps):
    """8 warps for the 64-row tiles of B=128, 4 for the 16-row tiles of B=3 (was 8 for both)."""
    tiles = launch.step_config(B, 4096, 512, torch.bfloat16, torch.device("cuda"), 3.0, 3.0, False).tiles
    assert (tiles.block_b, (tiles.cell_warps, tiles.out_warps)) == (min(64, max(16, B)), warps)

