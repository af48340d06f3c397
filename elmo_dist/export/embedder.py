"""Fast inference over tokenised sentences: a biLM with a cross-batch token-embedding cache.

The character CNN costs about four times the LSTMs per token slot (~37 vs ~9 MFLOP at the
``small`` sizes, which is why AllenNLP's ELMo spends ~80% of its time in it), yet its output
depends only on the word. ``Embedder`` keeps the CNN output of every word it has seen in one
growing table, so after the first few batches of a corpus almost no token goes through the CNN
(PTB: 10k distinct words); the table is emptied when it would pass ``cache_size`` words.
Padding slots never go through the CNN or cost a lookup.

Stateless (the default): every batch starts from a zero LSTM state, so a sentence's vectors do
not depend on what was embedded before it. This path builds the token inputs from the cache and
runs the two LSTM stacks directly (``BiLM.run_stacks``). Stateful (``stateful=True``): each batch
goes through ``BiLM.forward`` on a stateful biLM, carrying every row's state to the next batch
(AllenNLP's behaviour); the cache is not used there.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN, batch_to_ids, word_to_char_ids
from elmo_dist.model import BiLM


class TokenEmbeddingCache:
    """word -> character-CNN output (P,), kept in one (capacity, P) tensor; row 0 is zeros (padding)."""

    def __init__(self, encoder, max_words: int = 200_000, encode_batch: int = 1024):
        if max_words < 1:
            raise ValueError(f"cache_size must be >= 1; got {max_words}")
        self.encoder, self.max_words, self.encode_batch = encoder, max_words, encode_batch
        self.hits = self.misses = 0
        self.clear()

    def clear(self) -> None:
        p = self.encoder.proj.weight
        self._index: dict[str, int] = {}
        self._table = p.new_zeros(1024, p.shape[0])  # (capacity, P); row 0 = padding

    def __len__(self) -> int:
        return len(self._index)

    def encode(self, words: Sequence[str]) -> Tensor:
        """Character-CNN outputs of ``words`` without caching: (N, P)."""
        device = self.encoder.proj.weight.device
        parts = []
        for start in range(0, len(words), self.encode_batch):
            chunk = words[start:start + self.encode_batch]
            chars = torch.tensor([word_to_char_ids(w) for w in chunk], dtype=torch.long, device=device)
            parts.append(self.encoder.encode_unique(chars))  # (n, P)
        if not parts:
            return self._table.new_zeros(0, self._table.shape[1])
        return torch.cat(parts)

    def rows(self, sentences: Sequence[Sequence[str]]) -> Tensor:
        """(B, T) LongTensor of table rows for the words of ``sentences`` (0 = padding), encoding
        the words not cached yet. Valid until the next call (the table may be emptied)."""
        missing = {w for s in sentences for w in s if w not in self._index}
        if len(self._index) + len(missing) > self.max_words:
            self.clear()
            missing = {w for s in sentences for w in s}
        if missing:
            new = sorted(missing)
            first = len(self._index) + 1
            need = first + len(new)
            if need > self._table.shape[0]:
                grown = self._table.new_zeros(max(need, 2 * self._table.shape[0]), self._table.shape[1])
                grown[:first] = self._table[:first]
                self._table = grown
            self._table[first:need] = self.encode(new)
            self._index.update((w, first + i) for i, w in enumerate(new))
        n_tokens = sum(len(s) for s in sentences)
        self.misses += len(missing)
        self.hits += n_tokens - len(missing)
        T = max((len(s) for s in sentences), default=0)
        get = self._index.__getitem__
        rows = [[get(w) for w in s] + [0] * (T - len(s)) for s in sentences]
        return torch.tensor(rows, dtype=torch.long, device=self._table.device).view(len(sentences), T)

    def lookup(self, rows: Tensor) -> Tensor:
        """(...,) rows -> (..., P) embeddings."""
        return self._table.index_select(0, rows.reshape(-1)).view(*rows.shape, self._table.shape[1])


class Embedder:
    """Embeds batches of tokenised sentences with a biLM in eval mode, without gradients.

    ``embed(sentences)`` returns all layers (B, n_layers + 1, T, 2P) with sentence boundaries
    removed and zeros at padding, plus the lengths, exactly what ``BiLM.forward`` returns.
    """

    def __init__(self, bilm: BiLM, stateful: bool = False, cache_size: int = 200_000):
        self.bilm = bilm.eval()
        self.stateful = stateful
        self.bilm.stateful = stateful
        self.bilm.reset_state()
        self.cache = TokenEmbeddingCache(bilm.encoder, cache_size)

    @property
    def device(self) -> torch.device:
        return self.bilm.encoder.proj.weight.device

    @property
    def output_dim(self) -> int:
        return 2 * self.bilm.config.projection_dim

    @property
    def n_layers(self) -> int:
        return self.bilm.config.n_layers + 1

    def reset_state(self) -> None:
        self.bilm.reset_state()

    @torch.inference_mode()
    def embed(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """sentences (B lists of tokens, none empty) -> layers (B, L+1, T, 2P), lengths (B,)."""
        if any(len(s) == 0 for s in sentences):
            raise ValueError("Embedder.embed: empty sentence (drop blank lines before embedding)")
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        if self.stateful:
            out = self.bilm(batch_to_ids([list(s) for s in sentences]).to(self.device))
            return out.layers, lengths
        return self._embed_stateless(sentences), lengths

    def _embed_stateless(self, sentences: Sequence[Sequence[str]]) -> Tensor:
        framed = [[BOS_TOKEN, *s, EOS_TOKEN] for s in sentences]
        rows = self.cache.rows(framed)  # (B, T+2)
        x = self.cache.lookup(rows)  # (B, T+2, P)
        mask = rows > 0  # (B, T+2)
        fwd, bwd, _ = self.bilm.run_stacks(x, mask, None)
        T = rows.shape[1] - 2
        token_mask = mask[:, 2:]  # position t of the output is framed position t+1, real iff t+2 <= len+1
        keep = token_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat([f, b], dim=-1) for f, b in zip(fwd, bwd)]
        return torch.stack([layer[:, 1:T + 1] * keep for layer in layers], dim=1)  # (B, L+1, T, 2P)


def batches_by_length(lengths: Sequence[int], batch_size: int, max_batch_tokens: Optional[int] = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little is padding.

    A batch holds at most ``batch_size`` items and, when ``max_batch_tokens`` is set, at most that
    many padded tokens (an item longer than that goes alone).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= batch_size
        too_long = max_batch_tokens is not None and current and (len(current) + 1) * longest > max_batch_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
