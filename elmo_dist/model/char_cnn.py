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
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig


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
        e = self.char_embed(chars).transpose(1, 2)  # (N, d, C)
        feats = [self.activation(conv(e).amax(dim=2)) for conv in self.convs]  # [(N, count_k)]
        x = torch.cat(feats, dim=1)  # (N, F)
        for layer in self.highways:
            x = layer(x)
        return self.proj(x)  # (N, P)

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
