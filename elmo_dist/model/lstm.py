"""LSTM-with-projection layers and one direction's stack, with a pluggable recurrence.

Parameters are kept in the bilm-tf layout and gate order (i, j, f, o) so import and export are
plain copies:  W_0 = [input_weight; recurrent_weight]  (in + P, 4H),  B = bias (4H),
W_P_0 = proj_weight (H, P). The recurrence implementations (``elmo_dist_kernels``) take gate
order (i, f, o, j) so that one sigmoid covers a contiguous 3H block; the reorder is a column
permutation per call, cheap next to T steps of matmuls, and autograd carries it back.

The forget bias of 1 (bilm-tf adds it at run time, it is not stored in B) is folded into the
input projection of all steps, which is computed up front as one large matmul.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from elmo_dist_kernels import lstmp_sequence_torch, lstmp_steps_torch, triton_available

from .config import ModelConfig

_IMPLS = {}


def _reference_impl(*args):
    # Plain per-step autograd loop: what AllenNLP runs; kept as the slow, obvious baseline.
    xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip, reverse = args
    B, T, four_h = xw.shape
    H = four_h // 4
    h, c = h0, c0
    outs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        z = xw[:, t] + h @ w_rec  # (B, 4H)
        gates = torch.sigmoid(z[:, :3 * H])
        i, f, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        c_new = f * c + i * torch.tanh(z[:, 3 * H:])
        if cell_clip is not None:
            c_new = c_new.clamp(-cell_clip, cell_clip)
        h_new = (o * torch.tanh(c_new)) @ w_proj  # (B, P)
        if proj_clip is not None:
            h_new = h_new.clamp(-proj_clip, proj_clip)
        if mask is not None:
            keep = mask[:, t].unsqueeze(1)
            h_new, c_new = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            outs[t] = h_new * keep
        else:
            outs[t] = h_new
        h, c = h_new, c_new
    return torch.stack(outs, dim=1), h, c


def resolve_impl(name: str, device: torch.device) -> str:
    """auto -> triton on CUDA, torch elsewhere; triton on a CPU tensor is an error that says why."""
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if name == "triton" and device.type != "cuda":
        import os
        if os.environ.get("TRITON_INTERPRET") != "1":
            from elmo_dist.errors import EnvironmentProblem
            raise EnvironmentProblem(
                "lstm_impl='triton' needs a CUDA device (this tensor is on "
                f"{device.type}); use lstm_impl='torch' (the fast CPU path) or 'auto'")
    return name


def get_impl(name: str):
    if name not in _IMPLS:
        if name == "torch":
            _IMPLS[name] = lstmp_sequence_torch
        elif name == "reference":
            _IMPLS[name] = _reference_impl
        elif name == "triton":
            from elmo_dist_kernels.lstmp_triton import lstmp_sequence
            _IMPLS[name] = lstmp_sequence
        else:
            raise ValueError(f"unknown LSTM implementation {name!r}")
    return _IMPLS[name]


class LSTMState(NamedTuple):
    """Per-layer state of one direction: h (L, B, P) and c (L, B, H)."""
    h: Tensor
    c: Tensor


class LSTMPLayer(nn.Module):
    """One LSTM-with-projection layer (bilm-tf LSTMCell with num_proj, clips)."""

    def __init__(self, input_dim: int, config: ModelConfig):
        super().__init__()
        H, P = config.lstm_dim, config.projection_dim
        self.input_dim, self.hidden_dim, self.proj_dim = input_dim, H, P
        self.cell_clip, self.proj_clip = config.cell_clip, config.proj_clip
        self.impl = config.lstm_impl
        self.input_weight = nn.Parameter(torch.empty(input_dim, 4 * H))  # W_0[:in]
        self.recurrent_weight = nn.Parameter(torch.empty(P, 4 * H))  # W_0[in:]
        self.bias = nn.Parameter(torch.zeros(4 * H))  # B
        self.proj_weight = nn.Parameter(torch.empty(H, P))  # W_P_0
        self.reset_parameters()

    def reset_parameters(self):
        # Glorot-uniform over W_0 as a whole, as TF's default initialiser does for LSTMCell.
        fan_in, fan_out = self.input_dim + self.proj_dim, 4 * self.hidden_dim
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.input_weight, -bound, bound)
        nn.init.uniform_(self.recurrent_weight, -bound, bound)
        nn.init.zeros_(self.bias)
        bound = math.sqrt(6.0 / (self.hidden_dim + self.proj_dim))
        nn.init.uniform_(self.proj_weight, -bound, bound)

    @staticmethod
    def _ifoj(w: Tensor) -> Tensor:
        """Columns (i, j, f, o) -> (i, f, o, j) along the last dim."""
        i, j, f, o = w.chunk(4, dim=-1)
        return torch.cat([i, f, o, j], dim=-1)

    def gate_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(input weight (in, 4H), bias with the forget bias of 1 (4H,), recurrent weight (P, 4H)),
        in the recurrence's gate order (i, f, o, j)."""
        H = self.hidden_dim
        forget_one = torch.cat([self.bias.new_zeros(2 * H), self.bias.new_ones(H), self.bias.new_zeros(H)])
        return self._ifoj(self.input_weight), self._ifoj(self.bias + forget_one), self._ifoj(self.recurrent_weight)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor, mask: Optional[Tensor], reverse: bool):
        """x (B, T, in), h0 (B, P), c0 (B, H) -> out (B, T, P), h_T, c_T."""
        w_in, bias, w_rec = self.gate_weights()
        xw = torch.matmul(x, w_in) + bias  # (B, T, 4H)
        impl = get_impl(resolve_impl(self.impl, x.device))
        return impl(xw, w_rec, self.proj_weight, h0, c0, mask, self.cell_clip, self.proj_clip, reverse)


class LSTMStack(nn.Module):
    """n_layers LSTMP layers of one direction; residual connections from layer 1 on."""

    def __init__(self, config: ModelConfig, reverse: bool):
        super().__init__()
        self.config, self.reverse = config, reverse
        self.layers = nn.ModuleList(LSTMPLayer(config.projection_dim, config) for _ in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)

    def zero_state(self, batch_size: int, like: Tensor) -> LSTMState:
        L, H, P = self.config.n_layers, self.config.lstm_dim, self.config.projection_dim
        return LSTMState(like.new_zeros(L, batch_size, P), like.new_zeros(L, batch_size, H))

    def forward(self, x: Tensor, mask: Optional[Tensor], state: Optional[LSTMState]):
        """x (B, T, P) -> list of n_layers outputs (B, T, P) and the final LSTMState."""
        if state is None:
            state = self.zero_state(x.shape[0], x)
        outputs, hs, cs = [], [], []
        inp = x
        for k, layer in enumerate(self.layers):
            out, h, c = layer(self.dropout(inp), state.h[k], state.c[k], mask, self.reverse)
            if k > 0 and self.config.use_skip_connections:
                out = out + inp  # (B, T, P)
            outputs.append(out)
            hs.append(h)
            cs.append(c)
            inp = out
        return outputs, LSTMState(torch.stack(hs), torch.stack(cs))


def steps_together(config: ModelConfig, device: torch.device) -> bool:
    """Whether the two directions run as one recurrence (:func:`run_bidirectional`): on the torch
    path; the Triton kernel and the reference loop take one direction at a time."""
    return resolve_impl(config.lstm_impl, device) == "torch"


def run_bidirectional(fwd: LSTMStack, bwd: LSTMStack, x: Tensor, mask: Optional[Tensor],
                      state_fwd: Optional[LSTMState], state_bwd: Optional[LSTMState]):
    """Both stacks layer by layer, each layer's two directions in one ``lstmp_steps`` call.

    The same computation as ``fwd(x, ...)`` and ``bwd(x, ...)`` (dropout masks aside: they are
    drawn in another order). Between layers everything stays in processing order, (T, 2, B, .):
    slot 0 is the forward LM at position k, slot 1 the backward LM at position T-1-k, so the
    backward LM's input is flipped once at the bottom and its outputs once at the top.
    Returns the fwd and bwd layer lists [(B, T, P)] and their LSTMStates.
    """
    B, T, _ = x.shape
    if state_fwd is None:
        state_fwd, state_bwd = fwd.zero_state(B, x), bwd.zero_state(B, x)
    inp = torch.stack([x.transpose(0, 1), x.flip(1).transpose(0, 1)], dim=1)  # (T, 2, B, P)
    mask_steps = None if mask is None else torch.stack([mask.t(), mask.flip(1).t()], dim=1)  # (T, 2, B)
    outputs, hs, cs = [], [], []
    for k, (layer_f, layer_b) in enumerate(zip(fwd.layers, bwd.layers)):
        dropped = torch.stack([fwd.dropout(inp[:, 0]), bwd.dropout(inp[:, 1])])  # (2, T, B, in)
        weights = [layer_f.gate_weights(), layer_b.gate_weights()]
        w_in, bias, w_rec = (torch.stack(ws) for ws in zip(*weights))  # (2, in, 4H), (2, 4H), (2, P, 4H)
        xw = torch.baddbmm(bias.unsqueeze(1), dropped.flatten(1, 2), w_in)  # (2, T*B, 4H)
        xw = xw.view(2, T, B, -1).transpose(0, 1)  # (T, 2, B, 4H) view
        h0 = torch.stack([state_fwd.h[k], state_bwd.h[k]])  # (2, B, P)
        c0 = torch.stack([state_fwd.c[k], state_bwd.c[k]])  # (2, B, H)
        w_proj = torch.stack([layer_f.proj_weight, layer_b.proj_weight])  # (2, H, P)
        out, h, c = lstmp_steps_torch(xw, w_rec, w_proj, h0, c0, mask_steps, layer_f.cell_clip, layer_f.proj_clip)
        if k > 0 and fwd.config.use_skip_connections:
            out = out + inp  # (T, 2, B, P)
        outputs.append(out)
        hs.append(h)
        cs.append(c)
        inp = out
    fwd_layers = [o[:, 0].transpose(0, 1) for o in outputs]  # (B, T, P) each
    bwd_layers = [o[:, 1].flip(0).transpose(0, 1) for o in outputs]
    h, c = torch.stack(hs, dim=1), torch.stack(cs, dim=1)  # (2, L, B, P), (2, L, B, H)
    return fwd_layers, bwd_layers, LSTMState(h[0], c[0]), LSTMState(h[1], c[1])
