"""Layers of a frozen, stateless biLM from character ids, through the ``Embedder``'s cache.

``Elmo`` with a frozen stateless biLM calls this instead of ``BiLM.forward``. A downstream model
trains for many epochs over the same documents, and what depends on a word alone (its
character-CNN output, its first-layer input projections, its first-step LSTM states; the CNN
alone is ~80% of a forward at the ``small`` sizes) is then computed once per distinct token and
read from the cache on every later batch; the LSTMs run on packed sequences (``packed_lstm``).
Same layers as ``BiLM.forward`` (to ~1e-7, tests/unit/test_embed_api.py).

Tokens are keyed by the bytes of their character ids, so any char-id input works, whatever made
it. The Embedder copies the weights when it is made, so it is rebuilt whenever a parameter of
the biLM changes: a new tensor (``.to(device)``, a new model) or an in-place write
(``load_state_dict``), which bumps the tensor's version counter.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from elmo_dist.model.bilm import token_mask

from .embedder import Embedder


def chars_of_keys(keys) -> Tensor:
    """Keys made by :meth:`FrozenLayers.__call__` (int16 bytes of a token's ids) -> (n, C) int64 ids."""
    flat = np.frombuffer(b"".join(keys), dtype=np.int16)
    return torch.from_numpy(flat.reshape(len(keys), -1).astype(np.int64))


class FrozenLayers:
    """``layers, mask = FrozenLayers(bilm)(char_ids)``: what ``BiLM.forward`` returns for a
    stateless biLM in eval mode, (B, L+1, T, 2P) and (B, T), through a token cache of at most
    ``cache_mb`` MB (emptied and refilled when full)."""

    def __init__(self, bilm, cache_mb: float = 1024.0):
        self.bilm, self.cache_mb = bilm, cache_mb
        self._embedder: Optional[Embedder] = None
        self._weights_id: Optional[tuple] = None

    def _current_embedder(self) -> Embedder:
        weights_id = tuple((p.data_ptr(), p._version) for p in self.bilm.parameters())
        if self._embedder is None or weights_id != self._weights_id:
            self._embedder = Embedder(self.bilm, stateful=False, cache_mb=self.cache_mb, token_chars=chars_of_keys)
            self._weights_id = weights_id
        return self._embedder

    @staticmethod
    def applies(char_ids: Tensor, mask: Tensor) -> bool:
        """Tokens left-aligned in each row (as ``batch_to_ids`` makes them) and 50 ids a token,
        the layout ``BiLM.forward`` frames with <S>/</S>; other inputs go through ``BiLM.forward``."""
        lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
        prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths  # (B, T)
        return char_ids.shape[-1] == 50 and bool(torch.equal(prefix, mask))

    def __call__(self, char_ids: Tensor) -> tuple[Tensor, Tensor]:
        """char_ids (B, T, 50), tokens left-aligned (see :meth:`applies`) -> layers, mask."""
        mask = token_mask(char_ids)  # (B, T)
        B, T = mask.shape
        embedder = self._current_embedder()
        lengths = mask.sum(dim=1).tolist()
        ids = char_ids.to(torch.int16).cpu().numpy()  # ids <= 262 fit; the key of a token is its row's bytes
        rows = [b for b in range(B) if lengths[b]]
        sentences = [[ids[b, t].tobytes() for t in range(lengths[b])] for b in rows]
        weight = self.bilm.encoder.proj.weight
        out = torch.zeros(B, embedder.n_layers, T, embedder.output_dim, dtype=weight.dtype, device=weight.device)
        if rows:
            layers, _ = embedder.embed(sentences)  # (B', L+1, T', 2P), an inference tensor
            # Copied outside inference mode into a normal tensor, which autograd may save.
            out[torch.tensor(rows, device=out.device), :, :layers.shape[2]] = layers
        return out, mask
