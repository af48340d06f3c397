"""Character-CNN token encoder: chars -> convolutions -> max over time -> highway -> projection.

bilm-tf layout, per token of C character ids (shifted, 0 = padding):
  e = char_embed[ids]                          # (N, C, d)
  f_k = act(max_t conv1d_k(e))                 # (N, count_k) for each [width_k, count_k]
  x = concat_k f_k                             # (N, F)
  highway: g = sigmoid(x W_carry + b_carry);  x = g * relu(x W_transform + b_transform) + (1 - g) * x
  y = x W_proj + b_proj                        # (N, P)

The CNN is the most expensive part of the biLM per token (~80% of AllenNLP's ELMo inference
time), so ``forward`` runs it once per *distinct* token of a batch and scatters the results
back; padding slots (all-zero ids) never go through it.

Within a token, the convolutions run only over its characters, not over the 50-slot frame.
A token of m framed characters (BOW, its bytes, EOW) is followed by 50 - m copies of the
padding character, and every window of width w that lies wholly in that run has the same
output, v_k = conv_k(pad, ..., pad) + b_k. So
    max_t conv_k(e)[t] = max(max_{t < m} conv_k(e)[t], v_k)      (when 50 - m >= w)
and the left term needs only the first m + w - 1 slots. PTB words have m ~ 7, so the widest
filter (7, 58% of the CNN's FLOPs) runs over ~12 positions instead of 44. Tokens are grouped
by m (rounded up to a multiple of ``_LENGTH_BUCKET``), and each group runs every filter at once
as one GEMM over its windows of the widest width (``stacked_filters``). The result is the
full-width max (ties aside, gradients too: every padding window has the same gradient).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

PAD_CHAR_ID = 261
"""Shifted id of the within-word padding character (``elmo_dist.data.chars.PAD_CHAR + 1``);
model code imports only torch, so the number is repeated here (a test ties the two)."""
_LENGTH_BUCKET = 4  # tokens whose framed length rounds up to the same multiple share a conv call


class Highway(nn.Module):
    """One highway layer with the TF gate convention (g gates the transform, 1 - g carries)."""

    def __init__(self, dim: int):
        super().__init__()
        self.carry = nn.Linear(dim, dim)  # W_carry, b_carry (g)
        self.transform = nn.Linear(dim, dim)  # W_transform, b_transform

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.carry(x))  # (N, F)
        return g * torch.relu(self.transform(x)) + (1 - g) * x


class CharCNNEncoder(nn.Module):
    """Maps character ids (..., C) to context-independent token vectors (..., P)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # Row 0 is padding (the bilm-tf table has 261 rows; importers put a zero row in front).
        self.char_embed = nn.Embedding(config.n_characters, config.char_embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.char_embed_dim, count, kernel_size=width) for width, count in config.filters)
        self.highways = nn.ModuleList(Highway(config.n_filters) for _ in range(config.n_highway))
        self.proj = nn.Linear(config.n_filters, config.projection_dim)
        self.activation = torch.relu if config.activation == "relu" else torch.tanh

    def encode_unique(self, chars: Tensor) -> Tensor:
        """Encodes N tokens with no deduplication: (N, C) -> (N, P)."""
        x = self.activation(self.max_conv_features(chars))  # (N, F)
        for layer in self.highways:
            x = layer(x)
        return self.proj(x)  # (N, P)

    def max_conv_features(self, chars: Tensor) -> Tensor:
        """(N, C) -> (N, F): max over time of every filter, before the activation, computed on
        each token's characters only (see the module docstring)."""
        N, C = chars.shape
        if N == 0 or self.char_embed.num_embeddings <= PAD_CHAR_ID:
            return self._max_conv_full(chars)
        bucket = self.conv_slots(chars)  # (N,)
        if int(bucket.min()) == C:
            return self._max_conv_full(chars)
        order = torch.argsort(bucket)  # (N,)
        sizes, counts = torch.unique_consecutive(bucket[order], return_counts=True)
        weight, bias = self.stacked_filters()  # (W*d, F), (F,)
        W = self.widest
        pad_window = self.char_embed.weight[PAD_CHAR_ID].repeat(W)  # (W*d,) W padding characters
        pad_values = torch.addmv(bias, weight.t(), pad_window)  # (F,) v_k of every filter
        parts, start = [], 0
        for size, count in zip(sizes.tolist(), counts.tolist()):
            rows = order[start:start + count]
            start += count
            if size == C:  # windows near the frame's end: the per-filter convolutions, exactly
                parts.append(self._max_conv_full(chars[rows]))
                continue
            e = self.char_embed(chars[rows, :size])  # (n, size, d)
            windows = e.unfold(1, W, 1).transpose(2, 3).reshape(-1, W * e.shape[2])  # (n*L, W*d)
            feats = torch.addmm(bias, windows, weight).view(count, size - W + 1, -1)  # (n, L, F)
            # Windows a narrower filter has beyond L start past the token: all padding, = v_k.
            parts.append(torch.maximum(feats.amax(dim=1), pad_values.to(feats.dtype)))  # (n, F)
        return torch.cat(parts).index_select(0, torch.argsort(order))  # (N, F), input order

    @property
    def widest(self) -> int:
        return max(conv.kernel_size[0] for conv in self.convs)

    def stacked_filters(self) -> tuple[Tensor, Tensor]:
        """Every filter as one (W*d, F) matrix over windows of the widest width W: row j*d + c
        holds channel c at offset j; a filter of width w < W has zeros at offsets >= w.

        One GEMM over all filters replaces a conv1d call per filter per length bucket: the tiny
        preset's five filters made ~28 conv calls and as many backward calls per step, each
        ~1 ms of mostly fixed cost (convolution_backward was 14% of a tiny step); the zero
        offsets cost 16% more multiply-adds at the ELMo filter set, 48% at tiny's."""
        W = self.widest
        blocks = [F.pad(conv.weight, (0, W - conv.kernel_size[0])).permute(2, 1, 0).reshape(-1, conv.out_channels)
                  for conv in self.convs]  # [(W*d, count_k)], rows in (offset, channel) order
        return torch.cat(blocks, dim=1), torch.cat([conv.bias for conv in self.convs])

    def conv_slots(self, chars: Tensor) -> Tensor:
        """(N, C) -> (N,) the character slots each token's convolutions run over: its framed
        length m rounded up to a multiple of ``_LENGTH_BUCKET``, plus the widest filter's
        width - 1, at most C (at least that width)."""
        C = chars.shape[1]
        positions = torch.arange(1, C + 1, device=chars.device)  # (C,)
        framed = ((chars != PAD_CHAR_ID) * positions).amax(dim=1)  # (N,) 1 + last non-padding slot
        widest = self.widest
        rounded = (framed + _LENGTH_BUCKET - 1) // _LENGTH_BUCKET * _LENGTH_BUCKET
        return torch.clamp(torch.clamp(rounded + widest - 1, max=C), min=widest)

    def _max_conv_full(self, chars: Tensor) -> Tensor:
        e = self.char_embed(chars).transpose(1, 2)  # (N, d, C)
        return torch.cat([conv(e).amax(dim=2) for conv in self.convs], dim=1)  # (N, F)

    def forward(self, char_ids: Tensor) -> Tensor:
        """(B, T, C) char ids -> (B, T, P); padding tokens (all zeros) map to zeros."""
        B, T, C = char_ids.shape
        flat = char_ids.reshape(B * T, C)
        unique, inverse = torch.unique(flat, dim=0, return_inverse=True)  # (U, C), (B*T,)
        # torch.unique sorts rows, so an all-zero padding row, if present, is row 0.
        has_pad = bool((unique[0] == 0).all())
        encoded = self.encode_unique(unique[1:] if has_pad else unique)  # (U', P)
        if has_pad:
            encoded = torch.cat([encoded.new_zeros(1, encoded.shape[1]), encoded], dim=0)
        return encoded.index_select(0, inverse).view(B, T, -1)  # (B, T, P)
