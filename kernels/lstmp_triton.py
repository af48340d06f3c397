"""Fused Triton LSTMP: the CUDA path of the biLM's LSTM layers.

Contract: see ``elmo_dist_kernels/__init__.py`` (gate order i, f, o, j; forget bias folded into
``xw``; masked positions keep the state and output 0). ``lstmp_sequence`` here has the same
signature as the torch implementation, plus ``use_cuda_graphs``.

Layout of the implementation:
- lstmp_triton_kernels.py: the Triton kernels (forward cell, forward projection, backward cell,
  backward recurrent, and the reduce kernels of the split-K ones), each with its formula,
  shapes and tiling.
- lstmp_triton_launch.py: tile choice, buffers, the allocation-free step loops and the weight
  gradients, which are two matmuls over all T*B rows after the backward loop.
- lstmp_triton_graphs.py: the step loops captured as CUDA graphs.
- here: input checks, the launchers ``lstmp_forward`` / ``lstmp_backward``, the autograd
  Function and the public function.

Numerics: states (h, c), activated gates and the carried gradients are fp32; the weights, xw,
out, m (the input of the projection) and the gradients of xw are in the input dtype (fp32 or
bf16); every matmul accumulates in fp32. A clip passes the gradient where |value| < clip.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .lstmp_triton_graphs import GraphedLSTMP, acquire_graphed, graph_bytes, pool_limit_bytes, release_cuda_graphs
from .lstmp_triton_launch import (
    INTERPRETED,
    ForwardBuffers,
    StepConfig,
    alloc_backward,
    alloc_forward,
    alloc_scratch,
    backward_steps,
    forward_steps,
    step_config,
    weight_grads,
)

__all__ = ["lstmp_sequence", "lstmp_forward", "lstmp_backward", "LSTMPTritonFunction", "release_cuda_graphs"]

GRAPHS_ENV = "ELMO_DIST_LSTMP_CUDA_GRAPHS"
_DTYPES = (torch.float32, torch.bfloat16)


def _check(xw, w_rec, w_proj, h0, c0, mask) -> None:
    """Shapes, dtypes and devices, each failure one line naming the argument."""
    if not xw.is_cuda and not INTERPRETED:
        raise RuntimeError(
            "the Triton LSTMP kernel needs a CUDA device (or TRITON_INTERPRET=1 set before import, "
            "for testing); on CPU use the torch implementation, elmo_dist_kernels.lstmp_sequence_torch")
    if xw.dim() != 3 or xw.shape[2] % 4:
        raise ValueError(f"xw must be (B, T, 4H); got {tuple(xw.shape)}")
    B, T, four_h = xw.shape
    H, P = four_h // 4, w_proj.shape[-1]
    expected = {"w_rec": (P, four_h), "w_proj": (H, P), "h0": (B, P), "c0": (B, H)}
    for name, tensor in (("w_rec", w_rec), ("w_proj", w_proj), ("h0", h0), ("c0", c0)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must be {expected[name]} for xw {tuple(xw.shape)}; got {tuple(tensor.shape)}")
        if tensor.device != xw.device:
            raise ValueError(f"{name} is on {tensor.device} but xw is on {xw.device}; move both to one device")
    if B * T >= 2 ** 31:  # the mask's offsets are int32 in the kernels
        raise ValueError(f"xw {tuple(xw.shape)}: B * T = {B * T} must be below 2^31; split the batch")
    if xw.dtype not in _DTYPES:
        raise ValueError(f"xw dtype must be float32 or bfloat16; got {xw.dtype}")
    if mask is not None and (tuple(mask.shape) != (B, T) or mask.dtype != torch.bool or mask.device != xw.device):
        raise ValueError(f"mask must be a bool tensor of shape {(B, T)} on {xw.device}; "
                         f"got {mask.dtype} {tuple(mask.shape)} on {mask.device}")


def lstmp_forward(xw: Tensor, w_rec: Tensor, w_proj: Tensor, h0: Tensor, c0: Tensor,
                  keep: Optional[Tensor], cfg: StepConfig) -> Tuple[Tensor, Tensor, Tensor, ForwardBuffers]:
    """Runs the layer; returns out (B, T, P), h_T (B, P), c_T (B, H) in xw's dtype and the
    buffers backward needs. Inputs share one dtype, last dims contiguous; keep is (B, T) uint8."""
    B, T, four_h = xw.shape
    P = w_proj.shape[1]
    fwd = alloc_forward(B, T, four_h // 4, P, xw.dtype, xw.device)
    fwd.hs[0].copy_(h0)
    fwd.cs[0].copy_(c0)
    forward_steps(xw, w_rec, w_proj, keep, fwd, alloc_scratch(cfg.tiles, B, P, xw.device), cfg)
    return fwd.out, fwd.hs[T].to(xw.dtype, copy=True), fwd.cs[T].to(xw.dtype, copy=True), fwd


def lstmp_backward(grad_out: Tensor, grad_h: Tensor, grad_c: Tensor, w_rec: Tensor, w_proj: Tensor,
                   keep: Optional[Tensor], fwd: ForwardBuffers, cfg: StepConfig,
                   need_rec: bool = True, need_proj: bool = True):
    """Gradients (dxw, dw_rec, dw_proj, dh0, dc0) from those of (out, h_T, c_T); dw_* are None
    when not needed. grad_out must have its last dim contiguous."""
    B, T, P = grad_out.shape
    H = w_proj.shape[0]
    bwd = alloc_backward(B, T, H, P, grad_out.dtype, grad_out.device)
    bwd.dh.copy_(grad_h)
    bwd.dc.copy_(grad_c)
    scratch = alloc_scratch(cfg.tiles, B, P, grad_out.device)
    backward_steps(grad_out, w_rec, w_proj, keep, fwd, bwd, scratch, cfg)
    dw_rec, dw_proj = weight_grads(fwd, bwd, cfg.reverse, need_rec, need_proj)
    dtype = grad_out.dtype
    return bwd.dxw, dw_rec, dw_proj, bwd.dh.to(dtype), bwd.dc.to(dtype)


class LSTMPTritonFunction(torch.autograd.Function):
    """Whole-sequence LSTMP: forward saves the step buffers, backward runs the loop in reverse."""

    @staticmethod
    def forward(ctx, xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip, reverse, use_cuda_graphs):
        B, T, four_h = xw.shape
        H, P = four_h // 4, w_proj.shape[1]
        keep = mask.view(torch.uint8) if mask is not None else None
        cfg = step_config(B, H, P, xw.dtype, xw.device, cell_clip, proj_clip, reverse)
        runner = lease = None
        if use_cuda_graphs:
            key = (xw.device, B, T, H, P, xw.dtype, mask is not None, cell_clip, proj_clip, reverse)
            nbytes = graph_bytes(B, T, H, P, xw.dtype, mask is not None, cfg.tiles)
            runner, lease = acquire_graphed(
                key, nbytes, pool_limit_bytes(xw.device),
                lambda: GraphedLSTMP(B, T, H, P, xw.dtype, xw.device, mask is not None, cfg))
        if runner is not None:
            out, h_t, c_t = runner.forward(xw, w_rec, w_proj, h0, c0, keep)
            ctx.save_for_backward()
        else:
            out, h_t, c_t, fwd = lstmp_forward(xw, w_rec, w_proj, h0, c0, keep, cfg)
            ctx.save_for_backward(w_rec, w_proj, keep, fwd.gates, fwd.cs, fwd.hs, fwd.ms)
        ctx.cfg, ctx.runner, ctx.lease = cfg, runner, lease
        return out, h_t, c_t

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        need_rec, need_proj = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_out = grad_out.contiguous()
        if ctx.runner is not None:
            grads = ctx.runner.backward(grad_out, grad_h, grad_c, need_rec, need_proj)
        else:
            w_rec, w_proj, keep, gates, cs, hs, ms = ctx.saved_tensors
            fwd = ForwardBuffers(gates, cs, hs, ms, out=None)
            grads = lstmp_backward(grad_out, grad_h, grad_c, w_rec, w_proj, keep, fwd, ctx.cfg,
                                   need_rec, need_proj)
        return (*grads, None, None, None, None, None)


def _graphs_wanted(use_cuda_graphs: Optional[bool], device: torch.device) -> bool:
    if use_cuda_graphs is None:
        use_cuda_graphs = os.environ.get(GRAPHS_ENV, "0") == "1"
    # Graphs exist only on CUDA; under the interpreter (CPU tests) the eager loop runs instead.
    return bool(use_cuda_graphs) and device.type == "cuda" and not INTERPRETED


def lstmp_sequence(xw: Tensor, w_rec: Tensor, w_proj: Tensor, h0: Tensor, c0: Tensor,
                   mask: Optional[Tensor] = None, cell_clip: Optional[float] = None,
                   proj_clip: Optional[float] = None, reverse: bool = False, *,
                   use_cuda_graphs: Optional[bool] = None):
    """LSTMP over a sequence; returns (out (B, T, P), h_T (B, P), c_T (B, H)) in xw's dtype.

    ``use_cuda_graphs``: replay the step loops as CUDA graphs (CUDA only; ignored elsewhere).
    None reads the environment variable ELMO_DIST_LSTMP_CUDA_GRAPHS (``1`` turns it on).
    """
    _check(xw, w_rec, w_proj, h0, c0, mask)
    dtype = xw.dtype
    # One dtype inside the kernels (as in the torch implementation); autocast may mix them.
    w_rec, w_proj, h0, c0 = (t.to(dtype) for t in (w_rec, w_proj, h0, c0))
    return LSTMPTritonFunction.apply(
        xw.contiguous(), w_rec.contiguous(), w_proj.contiguous(), h0, c0, mask,
        None if cell_clip is None else float(cell_clip), None if proj_clip is None else float(proj_clip),
        bool(reverse), _graphs_wanted(use_cuda_graphs, xw.device))
