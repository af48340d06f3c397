"""Tile choice, buffers and the per-step launch loops of the Triton LSTMP.

The loops here launch kernels into preallocated buffers and allocate nothing, so the same code
runs eagerly and under CUDA-graph capture (lstmp_triton_graphs.py). Buffers are in processing
order: step s runs time t = s, or t = T-1-s when reverse.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from .lstmp_triton_kernels import (
    _lstmp_bwd_cell_kernel,
    _lstmp_bwd_rec_kernel,
    _lstmp_bwd_rec_reduce_kernel,
    _lstmp_fwd_cell_kernel,
    _lstmp_fwd_proj_kernel,
    _lstmp_fwd_proj_reduce_kernel,
)

# triton.jit returns an interpreter object when TRITON_INTERPRET=1 was set before import.
INTERPRETED = isinstance(_lstmp_fwd_cell_kernel, InterpretedFunction)

_TL_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}


class Tiles(NamedTuple):
    """Block sizes shared by the kernels (powers of two, >= 16 for tl.dot), warps, and the
    split-K of the two long reductions: ``*_split`` programs each take ``*_chunk`` (a multiple
    of block_k) of K = H in the forward projection, of K = 4H in backward's dz @ w_rec^T. The
    reduce kernels that sum the split-K partials are elementwise and get their own, smaller
    tiles (``reduce_b`` x ``reduce_p``), so that they too spread over the SMs."""

    block_b: int
    block_h: int  # cell tile over H (fwd cell, bwd cell)
    block_p: int  # output tile over P (fwd proj, bwd rec)
    block_k: int  # reduction chunk
    cell_warps: int  # fwd cell, bwd cell
    out_warps: int  # fwd proj, bwd rec
    fwd_split: int = 1
    fwd_chunk: int = 1 << 30
    bwd_split: int = 1
    bwd_chunk: int = 1 << 30
    reduce_b: int = 16
    reduce_p: int = 16
    reduce_warps: int = 1


def split_k(K: int, parts: int, block_k: int, min_chunk: int = 0) -> Tuple[int, int]:
    """(splits, chunk): K cut into at most ``parts`` chunks, each a multiple of block_k and at
    least min_chunk long."""
    chunk = max(triton.cdiv(triton.cdiv(K, max(parts, 1)), block_k) * block_k, min_chunk)
    return triton.cdiv(K, chunk), chunk


class StepConfig(NamedTuple):
    """Everything the step loops need besides tensors."""

    cell_clip: Optional[float]
    proj_clip: Optional[float]
    reverse: bool
    tiles: Tiles
    dot_dtype: object  # tl.dtype of the tl.dot operands
    dot_precision: str


class ForwardBuffers(NamedTuple):
    """What forward writes and backward reads; by step s unless stated."""

    gates: Tensor  # (T, B, 4H) fp32, activated i, f, o, j
    cs: Tensor  # (T+1, B, H) fp32, cs[s] the cell before step s, cs[0] = c0
    hs: Tensor  # (T+1, B, P) fp32, hs[s] the projected state before step s, hs[0] = h0
    ms: Tensor  # (T, B, H) weight dtype, m = o * tanh(c)
    out: Tensor  # (B, T, P) weight dtype, by time t


class BackwardBuffers(NamedTuple):
    """The carried gradients and what the weight-gradient matmuls read."""

    dh: Tensor  # (B, P) fp32, gradient w.r.t. the state after the current step; dh0 at the end
    dc: Tensor  # (B, H) fp32, same for the cell; dc0 at the end
    dxw: Tensor  # (B, T, 4H) weight dtype, dz by time t (the gradient of xw)
    dh_raw: Tensor  # (T, B, P) weight dtype, gradient w.r.t. m @ w_proj before the clip


INT32_LIMIT = 2 ** 31


def check_int32_offsets(B: int, H: int, P: int, tiles: Tiles) -> None:
    """The kernels index one step's (B, 4H) slices, the weights and the split-K partials with
    int32 offsets (only the (B, T, N) tensors get int64 ones): refuse sizes that would wrap."""
    sizes = {"B * 4H (one step of the gates)": B * 4 * H, "P * 4H (w_rec)": P * 4 * H,
             "splits * B * P (split-K partials)": max(tiles.fwd_split, tiles.bwd_split) * B * P}
    for what, n in sizes.items():
        if n >= INT32_LIMIT:
            raise ValueError(f"B={B}, H={H}, P={P}: {what} = {n} elements, over the kernels' int32 "
                             f"offsets (2^31); split the batch, or use the torch implementation")


def step_config(B: int, H: int, P: int, dtype: torch.dtype, device: torch.device,
                cell_clip, proj_clip, reverse: bool) -> StepConfig:
    tiles = _choose_tiles(B, H, P, device)
    check_int32_offsets(B, H, P, tiles)
    # Interpreter: bf16 dot is wrong there (see lstmp_triton_kernels.py), fp32 operands are exact.
    dot_dtype = tl.float32 if INTERPRETED else _TL_DTYPE[dtype]
    # fp32 inputs: IEEE products, not TF32, so fp32 results match an fp32 reference.
    dot_precision = "ieee" if dtype == torch.float32 else "tf32"
    return StepConfig(cell_clip, proj_clip, reverse, tiles, dot_dtype, dot_precision)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _choose_tiles(B: int, H: int, P: int, device: torch.device) -> Tiles:
    if INTERPRETED:
        # The interpreter's cost grows with programs and loop trips: one program, whole tiles.
        return Tiles(_pow2(B), _pow2(H), _pow2(P), min(_pow2(4 * H), 256), 4, 4)
    # Not yet timed on a GPU (none was available when this was written; tune with
    # benchmarks/bench_lstmp_gpu.py or benchmarks/gpu_check.sh). Aim: at least one program per
    # SM, so that the per-step weight reads (the floor) spread over the whole chip; the narrow
    # matmuls (N = P) get their parallelism from split-K. Registers: see _dot_warps. The cell
    # tile holds four fp32 accumulators, so it is capped at 2048 elements.
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    block_b = min(64, _pow2(B))
    n_b = triton.cdiv(B, block_b)

    def widest_h() -> int:
        for block in (64, 32, 16):
            if block_b * block <= 2048 and n_b * triton.cdiv(H, block) >= n_sm:
                return block
        return 16

    block_h = widest_h()
    block_k = 32
    block_p = min(64, _pow2(P))  # wide rows of w_proj / w_rec^T per load; split-K adds programs
    n_out = n_b * triton.cdiv(P, block_p)  # output tiles of the two narrow matmuls
    # Chunks of at least 4 * BLOCK_K: shorter ones write more fp32 partials than they read weights.
    fwd_split, fwd_chunk = split_k(H, triton.cdiv(n_sm, n_out), block_k, 4 * block_k)
    bwd_split, bwd_chunk = split_k(4 * H, triton.cdiv(n_sm, n_out), block_k, 4 * block_k)
    return Tiles(block_b, block_h, block_p, block_k, _dot_warps(4 * block_b * block_h),
                 _dot_warps(block_b * block_p), fwd_split, fwd_chunk, bwd_split, bwd_chunk,
                 *_reduce_tiles(B, P, n_sm))


def _dot_warps(accumulator_elems: int) -> int:
    """Warps of a tl.dot kernel from its fp32 accumulator elements per program. ptxas for
    sm_90 (offline, with the alignment hints the launches get; tests/kernels/test_lstmp_compile.py
    checks that nothing spills), bf16 at the original size: the 64 x 32 cell kernels take about
    100 registers with 8 warps and 174-185 with 4, so the large tiles get 8. A 16-row tile
    (B <= 16) has a quarter of the elements: 8 warps would leave threads with one or two each,
    and 4 (one warpgroup) suffice."""
    return 8 if accumulator_elems >= 4096 else 4


def _reduce_tiles(B: int, P: int, n_sm: int) -> Tuple[int, int, int]:
    """(rows, cols, warps) of the split-K reduce kernels: from 64 x 64, halve the longer side
    until there is a program per SM or the tile is down to 128 elements (8 x 16). With the
    matmul's own tiles these elementwise kernels got 16 programs at the original size (B=128,
    P=512) and 4 at the small one; now 256 and 128, on 132 SMs."""
    rb, rp = min(64, _pow2(B)), min(64, _pow2(P))
    while triton.cdiv(B, rb) * triton.cdiv(P, rp) < n_sm and rb * rp > 128:
        if rp >= rb and rp > 16:
            rp //= 2
        elif rb > 8:
            rb //= 2
        else:
            break
    return rb, rp, max(1, min(4, rb * rp // 512))


def alloc_forward(B: int, T: int, H: int, P: int, dtype: torch.dtype, device) -> ForwardBuffers:
    f32 = dict(dtype=torch.float32, device=device)
    return ForwardBuffers(
        gates=torch.empty(T, B, 4 * H, **f32),
        cs=torch.empty(T + 1, B, H, **f32),
        hs=torch.empty(T + 1, B, P, **f32),
        ms=torch.empty(T, B, H, dtype=dtype, device=device),
        out=torch.empty(B, T, P, dtype=dtype, device=device),
    )


def alloc_backward(B: int, T: int, H: int, P: int, dtype: torch.dtype, device) -> BackwardBuffers:
    return BackwardBuffers(
        dh=torch.empty(B, P, dtype=torch.float32, device=device),
        dc=torch.empty(B, H, dtype=torch.float32, device=device),
        dxw=torch.empty(B, T, 4 * H, dtype=dtype, device=device),
        dh_raw=torch.empty(T, B, P, dtype=dtype, device=device),
    )


def alloc_scratch(tiles: Tiles, B: int, P: int, device) -> Tensor:
    """fp32 partial sums of the split-K matmuls, (max split, B, P)."""
    return torch.empty(max(tiles.fwd_split, tiles.bwd_split), B, P, dtype=torch.float32, device=device)


def _keep_args(keep: Optional[Tensor], dummy: Tensor):
    """Pointer and strides for the (B, T) uint8 mask; a dummy pointer when there is none."""
    if keep is None:
        return dummy, 0, 0
    return keep, keep.stride(0), keep.stride(1)


def kernel_meta(cfg: StepConfig, has_mask: bool) -> Dict[str, dict]:
    """Compile-time arguments (constexprs and num_warps) of each kernel, by kernel name."""
    tiles = cfg.tiles
    mask_clip = dict(HAS_MASK=has_mask, HAS_CELL_CLIP=cfg.cell_clip is not None,
                     HAS_PROJ_CLIP=cfg.proj_clip is not None)
    dots = dict(DOT_DTYPE=cfg.dot_dtype, DOT_PRECISION=cfg.dot_precision, BLOCK_K=tiles.block_k)
    cell = dict(BLOCK_B=tiles.block_b, BLOCK_H=tiles.block_h, num_warps=tiles.cell_warps)
    out = dict(BLOCK_B=tiles.block_b, BLOCK_P=tiles.block_p, num_warps=tiles.out_warps)
    red = dict(BLOCK_B=tiles.reduce_b, BLOCK_P=tiles.reduce_p, num_warps=tiles.reduce_warps)
    fwd_proj = dict(HAS_MASK=has_mask, HAS_PROJ_CLIP=mask_clip["HAS_PROJ_CLIP"], SPLIT_K=tiles.fwd_split)
    bwd_rec = dict(HAS_MASK=has_mask, SPLIT_K=tiles.bwd_split)
    return {
        "_lstmp_fwd_cell_kernel": dict(HAS_MASK=has_mask, HAS_CELL_CLIP=mask_clip["HAS_CELL_CLIP"], **cell, **dots),
        "_lstmp_fwd_proj_kernel": dict(fwd_proj, **out, **dots),
        "_lstmp_fwd_proj_reduce_kernel": dict(fwd_proj, **red),
        "_lstmp_bwd_cell_kernel": dict(mask_clip, **cell, **dots),
        "_lstmp_bwd_rec_kernel": dict(bwd_rec, **out, **dots),
        "_lstmp_bwd_rec_reduce_kernel": dict(bwd_rec, **red),
    }


def reduce_grid(tiles: Tiles, B: int, P: int) -> Tuple[int, int]:
    return triton.cdiv(B, tiles.reduce_b), triton.cdiv(P, tiles.reduce_p)


def _clip_arg(clip: Optional[float]) -> float:
    return clip if clip is not None else 0.0


def forward_steps(xw: Tensor, w_rec: Tensor, w_proj: Tensor, keep: Optional[Tensor],
                  buf: ForwardBuffers, scratch: Tensor, cfg: StepConfig) -> None:
    """Runs the T steps; buf.hs[0] and buf.cs[0] must hold h0 and c0. Per step: the cell
    kernel, the projection kernel, and its reduce kernel when the projection is split."""
    B, T, four_h = xw.shape
    H, P = four_h // 4, w_proj.shape[1]
    tiles = cfg.tiles
    meta = kernel_meta(cfg, keep is not None)
    keep_ptr, keep_sb, keep_st = _keep_args(keep, xw)
    n_b = triton.cdiv(B, tiles.block_b)
    out_tiles = (n_b, triton.cdiv(P, tiles.block_p))
    for s in range(T):
        t = T - 1 - s if cfg.reverse else s
        _lstmp_fwd_cell_kernel[(n_b, triton.cdiv(H, tiles.block_h))](
            xw, w_rec, buf.hs[s], buf.cs[s], keep_ptr, buf.gates[s], buf.cs[s + 1], buf.ms[s],
            B, H, P, t, xw.stride(0), xw.stride(1), keep_sb, keep_st, _clip_arg(cfg.cell_clip),
            **meta["_lstmp_fwd_cell_kernel"])
        epilogue_args = (buf.hs[s], keep_ptr, buf.hs[s + 1], buf.out)
        strides = (buf.out.stride(0), buf.out.stride(1), keep_sb, keep_st, _clip_arg(cfg.proj_clip))
        _lstmp_fwd_proj_kernel[(*out_tiles, tiles.fwd_split)](
            buf.ms[s], w_proj, *epilogue_args, scratch, B, H, P, t, tiles.fwd_chunk, *strides,
            **meta["_lstmp_fwd_proj_kernel"])
        if tiles.fwd_split > 1:
            _lstmp_fwd_proj_reduce_kernel[reduce_grid(tiles, B, P)](
                scratch, *epilogue_args, B, P, t, *strides, **meta["_lstmp_fwd_proj_reduce_kernel"])


def backward_steps(grad_out: Tensor, w_rec: Tensor, w_proj: Tensor, keep: Optional[Tensor],
                   fwd: ForwardBuffers, bwd: BackwardBuffers, scratch: Tensor, cfg: StepConfig) -> None:
    """Runs the T steps in reverse processing order; bwd.dh and bwd.dc must hold the gradients
    w.r.t. h_T and c_T (fp32) and end as those w.r.t. h0 and c0. Per step: the cell kernel,
    the recurrent kernel, and its reduce kernel when that is split."""
    B, T, four_h = bwd.dxw.shape
    H, P = four_h // 4, w_proj.shape[1]
    tiles = cfg.tiles
    meta = kernel_meta(cfg, keep is not None)
    keep_ptr, keep_sb, keep_st = _keep_args(keep, grad_out)
    n_b = triton.cdiv(B, tiles.block_b)
    out_tiles = (n_b, triton.cdiv(P, tiles.block_p))
    dxw = bwd.dxw
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if cfg.reverse else s
        _lstmp_bwd_cell_kernel[(n_b, triton.cdiv(H, tiles.block_h))](
            bwd.dh, grad_out, fwd.hs[s + 1], keep_ptr, w_proj, fwd.gates[s], fwd.cs[s + 1], fwd.cs[s],
            bwd.dc, dxw, bwd.dh_raw[s],
            B, H, P, t, grad_out.stride(0), grad_out.stride(1), keep_sb, keep_st, dxw.stride(0), dxw.stride(1),
            _clip_arg(cfg.cell_clip), _clip_arg(cfg.proj_clip), **meta["_lstmp_bwd_cell_kernel"])
        _lstmp_bwd_rec_kernel[(*out_tiles, tiles.bwd_split)](
            dxw, w_rec, keep_ptr, bwd.dh, scratch,
            B, H, P, t, tiles.bwd_chunk, dxw.stride(0), dxw.stride(1), keep_sb, keep_st,
            **meta["_lstmp_bwd_rec_kernel"])
        if tiles.bwd_split > 1:
            _lstmp_bwd_rec_reduce_kernel[reduce_grid(tiles, B, P)](
                scratch, keep_ptr, bwd.dh, B, P, t, keep_sb, keep_st, **meta["_lstmp_bwd_rec_reduce_kernel"])


def weight_grads(fwd: ForwardBuffers, bwd: BackwardBuffers, reverse: bool,
                 need_rec: bool, need_proj: bool):
    """dW_rec = sum_t h_prev_t^T dz_t (P, 4H) and dW_proj = sum_t m_t^T dh_raw_t (H, P), each one
    matmul over all T*B rows (in the weight dtype, fp32 accumulation in cuBLAS)."""
    T, B, H = fwd.ms.shape
    P = fwd.hs.shape[2]
    dtype = bwd.dxw.dtype
    dw_rec = dw_proj = None
    if need_rec:
        h_prev = fwd.hs[:T].flip(0) if reverse else fwd.hs[:T]  # (T, B, P) by time
        h_prev = h_prev.transpose(0, 1).reshape(B * T, P).to(dtype)  # rows in dxw's (b, t) order
        dw_rec = h_prev.t() @ bwd.dxw.reshape(B * T, 4 * H)
    if need_proj:
        dw_proj = fwd.ms.reshape(T * B, H).t() @ bwd.dh_raw.reshape(T * B, P)
    return dw_rec, dw_proj
