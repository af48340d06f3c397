"""Plain-autograd LSTMP reference, written independently of every kernel it checks.

It follows the contract in ``elmo_dist_kernels/__init__.py`` one step at a time with ordinary
torch ops, so autograd derives every gradient; run it in float64 to get a reference that the
kernels (fp32 / bf16, hand-written backward) are compared against.
"""
from __future__ import annotations

import torch


def lstmp_reference(xw, w_rec, w_proj, h0, c0, mask=None, cell_clip=None, proj_clip=None, reverse=False):
    """Returns (out (B, T, P), h_T (B, P), c_T (B, H)); gate order (i, f, o, j)."""
    B, T, four_h = xw.shape
    H = four_h // 4
    h, c = h0, c0
    outs = [None] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        z = xw[:, t] + h @ w_rec  # (B, 4H)
        i = torch.sigmoid(z[:, 0 * H:1 * H])
        f = torch.sigmoid(z[:, 1 * H:2 * H])
        o = torch.sigmoid(z[:, 2 * H:3 * H])
        j = torch.tanh(z[:, 3 * H:4 * H])
        c_new = f * c + i * j  # (B, H)
        if cell_clip is not None:
            c_new = torch.clamp(c_new, -cell_clip, cell_clip)
        h_new = (o * torch.tanh(c_new)) @ w_proj  # (B, P)
        if proj_clip is not None:
            h_new = torch.clamp(h_new, -proj_clip, proj_clip)
        if mask is not None:
            m = mask[:, t].unsqueeze(1).to(h_new.dtype)  # (B, 1)
            h_new = m * h_new + (1 - m) * h
            c_new = m * c_new + (1 - m) * c
            outs[t] = m * h_new
        else:
            outs[t] = h_new
        h, c = h_new, c_new
    return torch.stack(outs, dim=1), h, c
