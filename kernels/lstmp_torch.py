"""LSTMP recurrence in torch with a hand-written backward: the CPU path of the biLM.

Contract: see ``elmo_dist_kernels/__init__.py`` (gate order i, f, o, j; forget bias folded
into ``xw``; masks leave the state unchanged).

Why not plain autograd over a per-step loop: autograd records ~15 small ops per step and, in
backward, computes the weight gradients one step at a time (T small matmuls each for w_rec and
w_proj, plus accumulation). Here the forward runs without a graph into preallocated (T, D, B, .)
buffers, and the backward does only the work that depends on the carried gradient inside the
loop; the weight gradients are two large matmuls over all T*B rows after it. On 2 CPU threads
this turns the per-step loop from 1.6-2.4x slower than ``nn.LSTM(proj_size=...)`` (which cannot
clip) into a path that is faster than it (see benchmarks/bench_lstm_layer.py).

D independent directions run in the same loop (``lstmp_steps``; the biLM's forward and
backward LMs, D = 2), batched matmuls and elementwise ops over (D, B, .) tiles: the step count
and the op count per step stay those of one direction. The package's one-direction contract
(``lstmp_sequence``) is D = 1.

Clip gradients follow the convention "the gradient passes where |x| < clip": after clamping in
place the raw value is gone, and a stored value equal to +-clip means it was clipped. This
differs from ``torch.clamp``'s backward only when the raw value was exactly +-clip.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _forward(xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip):
    """Runs the recurrence of D directions at once, in processing order k; returns the buffers.

    xw (T, D, B, 4H) any strides, w_rec (D, P, 4H), w_proj (D, H, P), h0 (D, B, P), c0 (D, B, H),
    mask (T, D, B) bool or None. Slot k of ``cells``/``hs`` is the state before step k, so
    "previous state" is slot k and the new one slot k + 1 whatever a direction's time order.
    """
    T, D, B, four_h = xw.shape
    H = four_h // 4
    P = w_proj.shape[2]
    gates = torch.empty(T, D, B, four_h, dtype=xw.dtype, device=xw.device)  # activated i, f, o, j
    cells = torch.empty(T + 1, D, B, H, dtype=xw.dtype, device=xw.device)  # c_{-1}, then per step
    hs = torch.empty(T + 1, D, B, P, dtype=xw.dtype, device=xw.device)  # h_{-1}, then per step
    ms = torch.empty(T, D, B, H, dtype=xw.dtype, device=xw.device)  # o * tanh(c) per step
    cells[0].copy_(c0)
    hs[0].copy_(h0)
    for k in range(T):
        z = gates[k]  # (D, B, 4H)
        torch.baddbmm(xw[k], hs[k], w_rec, out=z)
        z[..., : 3 * H].sigmoid_()
        z[..., 3 * H:].tanh_()
        i, f, o, j = z[..., :H], z[..., H:2 * H], z[..., 2 * H:3 * H], z[..., 3 * H:]
        c = cells[k + 1]
        torch.mul(f, cells[k], out=c)
        c.addcmul_(i, j)
        if cell_clip is not None:
            c.clamp_(-cell_clip, cell_clip)
        m = ms[k]
        torch.tanh(c, out=m)
        m.mul_(o)
        h = hs[k + 1]
        torch.bmm(m, w_proj, out=h)
        if proj_clip is not None:
            h.clamp_(-proj_clip, proj_clip)
        if mask is not None:
            # Padding: carry the previous state through unchanged.
            keep = mask[k].unsqueeze(-1)  # (D, B, 1) bool
            torch.where(keep, h, hs[k], out=h)
            torch.where(keep, c, cells[k], out=c)
    out = hs[1:].clone() if mask is None else hs[1:] * mask.unsqueeze(-1)  # (T, D, B, P)
    return out, gates, cells, hs, ms


def _backward(grad_out, grad_hT, grad_cT, gates, cells, hs, ms, w_rec, w_proj, mask, cell_clip, proj_clip):
    """Reverse-order recurrence; returns grads for xw (T, D, B, 4H), w_rec, w_proj, h0, c0.

    Per step: two batched matmuls and ~15 elementwise ops on (D, B, H) tiles that stay in cache.
    (Precomputing the gate-derivative factors for all steps at once was measured slower: it
    streams several (T, B, 4H) tensors through memory.) dz is written into a (D, T, B, 4H)
    buffer, so that each direction's weight gradient reads it as one (T*B, 4H) block.
    """
    T, D, B, four_h = gates.shape
    H = four_h // 4
    P = w_proj.shape[2]
    one = gates.new_ones(())
    grad_xw = torch.empty(D, T, B, four_h, dtype=gates.dtype, device=gates.device)
    dh_raw_all = torch.empty(D, T, B, P, dtype=gates.dtype, device=gates.device)
    dh = grad_hT.clone() if grad_hT is not None else torch.zeros_like(hs[0])  # (D, B, P)
    dc = grad_cT.clone() if grad_cT is not None else torch.zeros_like(cells[0])  # (D, B, H)
    # A contiguous (D, 4H, P) copy: dz @ w_rec^T measured ~10% faster than through a transposed view.
    w_rec_t, w_proj_t = w_rec.transpose(1, 2).contiguous(), w_proj.transpose(1, 2)
    for k in range(T - 1, -1, -1):
        g_out = grad_out[k] if grad_out is not None else None  # (D, B, P)
        if mask is not None:
            keep = mask[k].unsqueeze(-1).to(dh.dtype)  # (D, B, 1)
            # The state passed through where keep == 0: its gradient skips this step.
            dh_skip, dc_skip = dh * (1 - keep), dc * (1 - keep)
            dh, dc = dh * keep, dc * keep
            if g_out is not None:
                dh = dh.addcmul_(g_out, keep)
        elif g_out is not None:
            dh = dh + g_out
        dh_raw = dh_raw_all[:, k]  # (D, B, P)
        if proj_clip is not None:
            torch.mul(dh, hs[k + 1].abs() < proj_clip, out=dh_raw)
        else:
            dh_raw.copy_(dh)
        dm = torch.bmm(dh_raw, w_proj_t)  # (D, B, H)
        z = gates[k]
        i, f, o, j = z[..., :H], z[..., H:2 * H], z[..., 2 * H:3 * H], z[..., 3 * H:]
        c = cells[k + 1]
        tc = torch.tanh(c)
        do = dm * tc
        dm.mul_(o)
        dc.addcmul_(dm, torch.addcmul(one, tc, tc, value=-1))  # += dm * o * (1 - tanh(c)^2)
        if cell_clip is not None:
            dc.mul_(c.abs() < cell_clip)
        dz = grad_xw[:, k]  # (D, B, 4H) view, each direction's (B, 4H) block contiguous
        torch.mul(dc * j, torch.addcmul(i, i, i, value=-1), out=dz[..., :H])  # i (1 - i)
        torch.mul(dc * cells[k], torch.addcmul(f, f, f, value=-1), out=dz[..., H:2 * H])
        torch.mul(do, torch.addcmul(o, o, o, value=-1), out=dz[..., 2 * H:3 * H])
        torch.mul(dc * i, torch.addcmul(one, j, j, value=-1), out=dz[..., 3 * H:])  # 1 - j^2
        dh = torch.bmm(dz, w_rec_t)  # (D, B, P)
        dc = dc * f
        if mask is not None:
            dh.add_(dh_skip)
            dc.add_(dc_skip)
    # Weight gradients: one batched matmul over all T*B rows each (rows paired by step k).
    h_prev = hs[:-1].transpose(0, 1).reshape(D, T * B, P)
    grad_w_rec = torch.bmm(h_prev.transpose(1, 2), grad_xw.view(D, T * B, four_h))  # (D, P, 4H)
    m_all = ms.transpose(0, 1).reshape(D, T * B, H)
    grad_w_proj = torch.bmm(m_all.transpose(1, 2), dh_raw_all.view(D, T * B, P))  # (D, H, P)
    return grad_xw.transpose(0, 1), grad_w_rec, grad_w_proj, dh, dc


class LSTMPStepsFunction(torch.autograd.Function):
    """D directions' LSTMP in processing order with a hand-written backward (module docstring)."""

    @staticmethod
    def forward(ctx, xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip):
        with torch.no_grad():
            out, gates, cells, hs, ms = _forward(xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip)
        ctx.save_for_backward(w_rec, w_proj, gates, cells, hs, ms,
                              mask if mask is not None else torch.empty(0))
        ctx.has_mask = mask is not None
        ctx.cell_clip, ctx.proj_clip = cell_clip, proj_clip
        return out, hs[-1].clone(), cells[-1].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_hT, grad_cT):
        w_rec, w_proj, gates, cells, hs, ms, mask = ctx.saved_tensors
        grads = _backward(grad_out, grad_hT, grad_cT, gates, cells, hs, ms, w_rec, w_proj,
                          mask if ctx.has_mask else None, ctx.cell_clip, ctx.proj_clip)
        return (*grads, None, None, None)


def lstmp_steps(xw: Tensor, w_rec: Tensor, w_proj: Tensor, h0: Tensor, c0: Tensor,
                mask: Optional[Tensor] = None, cell_clip: Optional[float] = None,
                proj_clip: Optional[float] = None):
    """D independent LSTMP recurrences stepped together, inputs already in processing order.

    xw (T, D, B, 4H) (any strides), w_rec (D, P, 4H), w_proj (D, H, P), h0 (D, B, P), c0 (D, B, H),
    mask (T, D, B) bool or None -> (out (T, D, B, P), h_T (D, B, P), c_T (D, B, H)); step k of
    direction d is whatever position that direction visits k-th (the biLM passes its backward LM
    time-reversed). Stepping the forward and backward LMs together halves the ops per step:
    at the tiny preset (B = 32, H = 256) a step is ~30 small ops whose fixed cost dominates.
    """
    T, D, B, four_h = xw.shape
    H, P = four_h // 4, w_proj.shape[-1]
    expected = {"w_rec": (D, P, four_h), "w_proj": (D, H, P), "h0": (D, B, P), "c0": (D, B, H)}
    for name, tensor in (("w_rec", w_rec), ("w_proj", w_proj), ("h0", h0), ("c0", c0)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must be {expected[name]} for xw {tuple(xw.shape)}; got {tuple(tensor.shape)}")
    if mask is not None and (tuple(mask.shape) != (T, D, B) or mask.dtype != torch.bool):
        raise ValueError(f"mask must be a bool tensor of shape {(T, D, B)}; got {mask.dtype} {tuple(mask.shape)}")
    dtype = xw.dtype
    # One dtype inside the loop (out= ops need it); autocast may hand us mixed inputs.
    w_rec, w_proj, h0, c0 = (t.to(dtype) for t in (w_rec, w_proj, h0, c0))
    return LSTMPStepsFunction.apply(xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip)


def _check(xw, w_rec, w_proj, h0, c0, mask):
    if xw.dim() != 3 or xw.shape[2] % 4:
        raise ValueError(f"xw must be (B, T, 4H); got {tuple(xw.shape)}")
    B, T, four_h = xw.shape
    H, P = four_h // 4, w_proj.shape[1]
    expected = {"w_rec": (P, four_h), "w_proj": (H, P), "h0": (B, P), "c0": (B, H)}
    for name, tensor in (("w_rec", w_rec), ("w_proj", w_proj), ("h0", h0), ("c0", c0)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must be {expected[name]} for xw {tuple(xw.shape)}; got {tuple(tensor.shape)}")
    if mask is not None and (tuple(mask.shape) != (B, T) or mask.dtype != torch.bool):
        raise ValueError(f"mask must be a bool tensor of shape {(B, T)}; got {mask.dtype} {tuple(mask.shape)}")


def lstmp_sequence(xw: Tensor, w_rec: Tensor, w_proj: Tensor, h0: Tensor, c0: Tensor,
                   mask: Optional[Tensor] = None, cell_clip: Optional[float] = None,
                   proj_clip: Optional[float] = None, reverse: bool = False):
    """LSTMP over a sequence (the package contract); returns (out (B, T, P), h_T (B, P), c_T (B, H))."""
    _check(xw, w_rec, w_proj, h0, c0, mask)
    steps = (xw.flip(1) if reverse else xw).transpose(0, 1).unsqueeze(1)  # (T, 1, B, 4H) by step
    mask_steps = None if mask is None else (mask.flip(1) if reverse else mask).t().unsqueeze(1)  # (T, 1, B)
    out, h, c = lstmp_steps(steps, w_rec[None], w_proj[None], h0[None], c0[None], mask_steps, cell_clip, proj_clip)
    out = out[:, 0].transpose(0, 1)  # (B, T, P) by step
    return (out.flip(1) if reverse else out.contiguous()), h[0], c[0]
