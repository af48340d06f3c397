"""Fast inference over tokenised sentences: a biLM with a cross-batch token-embedding cache.

The character CNN costs about four times the LSTMs per token slot (~37 vs ~9 MFLOP at the
``small`` sizes, which is why AllenNLP's ELMo spends ~80% of its time in it), yet its output
depends only on the word. ``Embedder`` keeps the CNN output of every word it has seen in one
growing table, so after the first few batches of a corpus almost no token goes through the CNN
(PTB: 10k distinct words); the table is emptied when it would pass its size (``cache_mb``).
Padding slots never go through the CNN or cost a lookup.

Stateless (the default): every batch starts from a zero LSTM state, so a sentence's vectors do
not depend on what was embedded before it. Then more than the CNN output depends on the word
alone, and the cache keeps it too, per direction: the first-layer input projection (x W_in + B,
a third of that layer's matmuls) and every layer's state after a sentence's first step (its
first word going forward, its last going backward, see ``packed_lstm``). The LSTM stacks run
the remaining n - 1 steps of each sentence on packed sequences with no padding
(``packed_lstm.PackedBiLM``; same outputs as ``BiLM.forward`` to ~1e-7).
Stateful (``stateful=True``): each batch goes through ``BiLM.forward`` on a stateful biLM,
carrying every row's state to the next batch (AllenNLP's behaviour); the cache is not used there.
``embed_in_windows`` runs sentences of any length a window at a time, the LSTM state carried
from window to window (``windows.py``), stateless or stateful, token vectors from the cache.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from elmo_dist.data.chars import batch_to_ids, word_to_char_ids
from elmo_dist.model import BiLM


def words_to_char_tensor(words: Sequence[str]) -> Tensor:
    """(n,) words -> (n, 50) shifted character ids (``word_to_char_ids``)."""
    return torch.tensor([word_to_char_ids(w) for w in words], dtype=torch.long)


TABLES = ("token", "xw0 forward", "xw0 backward", "first-step state forward", "first-step state backward")


class TokenEmbeddingCache:
    """word -> character-CNN output (P,) and, with a ``PackedBiLM``, per direction what the
    stateless biLM computes from the word alone: x W_in + B of the first layer (4H) and the
    state after a sentence's first step (L (P + H), ``PackedBiLM.first_step``). One row per word
    in growing tables, row 0 = padding (zeros). Emptied when a batch would take it past
    ``max_words``."""

    def __init__(self, encoder, max_words: int = 200_000, encode_batch: int = 1024, packed=None,
                 token_chars: Optional[Callable[[Sequence], Tensor]] = None):
        if max_words < 1:
            raise ValueError(f"cache size must be >= 1 word; got {max_words}")
        self.encoder, self.max_words, self.encode_batch = encoder, max_words, encode_batch
        # Keys are words by default; ``token_chars(keys) -> (n, 50)`` lets other keys in (``Elmo``
        # keys tokens by the bytes of their character ids).
        self.token_chars = token_chars or words_to_char_tensor
        self.packed = packed  # a PackedBiLM: also cache input projections and first-step states
        self.hits = self.misses = 0
        self.clear()

    def clear(self) -> None:
        p = self.encoder.proj.weight
        self._index: dict[str, int] = {}
        widths = [p.shape[0]]
        if self.packed is not None:
            widths += [4 * self.packed.hidden] * 2 + [self.packed.state_width] * 2
        self._tables = [p.new_zeros(1024, w) for w in widths]  # (capacity, width) each: TABLES

    def __len__(self) -> int:
        return len(self._index)

    @torch.inference_mode()
    def encode(self, words: Sequence[str], parallel: bool = False) -> Tensor:
        """Character-CNN outputs of ``words`` without caching: (N, P); ``parallel`` splits them
        over two threads (see PackedBiLM.in_two_threads)."""
        if parallel and self.packed is not None and len(words) >= 64:
            half = len(words) // 2
            a, b = self.packed.in_two_threads(lambda: self._encode(words[:half]), lambda: self._encode(words[half:]),
                                              self.encoder.proj.weight.device)
            return torch.cat([a, b])
        return self._encode(words)

    def _encode(self, words: Sequence[str]) -> Tensor:
        device = self.encoder.proj.weight.device
        parts = []
        for start in range(0, len(words), self.encode_batch):
            chunk = words[start:start + self.encode_batch]
            chars = self.token_chars(chunk).to(device)  # (n, 50)
            parts.append(self.encoder.encode_unique(chars))  # (n, P)
        if not parts:
            return self._tables[0].new_zeros(0, self._tables[0].shape[1])
        return torch.cat(parts)

    def _reserve(self, rows: int) -> None:
        """Makes the tables hold at least ``rows`` rows (row 0 included), keeping the filled ones."""
        if rows <= self._tables[0].shape[0]:
            return
        # Grow by 1.25x, not 2x: the tables are the export's largest allocation. Rows past the
        # filled ones are never read, so they are left uninitialised (untouched pages cost no RSS).
        size = min(max(rows, self._tables[0].shape[0] * 5 // 4), max(rows, self.max_words + 1))
        filled = len(self._index) + 1
        grown = []
        for table in self._tables:
            bigger = table.new_empty(size, table.shape[1])
            bigger[:filled] = table[:filled]
            grown.append(bigger)
        self._tables = grown

    def _add(self, words: list, parallel: bool = False) -> None:
        first = len(self._index) + 1
        need = first + len(words)
        self._reserve(need)
        emb = self.encode(words, parallel)  # (n, P)
        self._tables[0][first:need] = emb
        if self.packed is not None:
            def direction(d: int):
                def work():
                    xw = self.packed.input_projection(emb, direction=d)  # (n, 4H)
                    self._tables[1 + d][first:need] = xw
                    self._tables[3 + d][first:need] = self.packed.first_step(emb, xw, d)  # xw overwritten
                return work
            if parallel and len(words) >= 64:
                self.packed.in_two_threads(direction(0), direction(1), emb.device)
            else:
                direction(0)()
                direction(1)()
        self._index.update((w, first + i) for i, w in enumerate(words))

    def prefetch(self, words: Iterable[str], parallel: bool = False) -> int:
        """Encodes the words not cached yet, most frequent first and only as many as fit without
        emptying the cache, in blocks of 2 x ``encode_batch`` words; returns how many were added.

        Why: batch by batch, each call encodes a few dozen new words, and the CNN's fixed cost
        per call dominates at that size (0.58 ms a word over a 9,600-sentence PTB stream, against
        0.15 ms in blocks of 1,024). A caller that knows its next sentences (the HDF5 export reads
        10,000 lines at a time) encodes their vocabulary here at the block rate.
        """
        counts = Counter(w for w in words if w not in self._index)
        room = self.max_words - len(self._index)
        new = sorted(w for w, _ in counts.most_common(max(room, 0)))
        self._reserve(len(self._index) + 1 + len(new))  # one allocation, not a growth per block
        block = 2 * self.encode_batch  # bounds the temporaries ((n, 4H) projections and CNN maps)
        for start in range(0, len(new), block):
            self._add(new[start:start + block], parallel)
        self.misses += len(new)
        return len(new)

    def row_ids(self, words: Sequence[str], parallel: bool = False) -> list:
        """Table rows of ``words`` (encoding those not cached yet; ``parallel``: the CNN in two
        threads); valid until the next call."""
        missing = {w for w in words if w not in self._index}
        if len(self._index) + len(missing) > self.max_words:
            self.clear()
            missing = set(words)
        if missing:
            self._add(sorted(missing), parallel)
        self.misses += len(missing)
        self.hits += len(words) - len(missing)
        get = self._index.__getitem__
        return [get(w) for w in words]

    def lookup(self, rows: Tensor, table: int = 0, out: Optional[Tensor] = None) -> Tensor:
        """(N,) rows -> (N, width) of a table (see TABLES); into ``out`` when given."""
        if out is None:
            return self._tables[table].index_select(0, rows)
        return torch.index_select(self._tables[table], 0, rows, out=out)


class Embedder:
    """Embeds batches of tokenised sentences with a biLM in eval mode, without gradients.

    ``embed(sentences)`` returns all layers (B, n_layers + 1, T, 2P) with sentence boundaries
    removed and zeros at padding, plus the lengths: what ``BiLM.forward`` returns.
    ``cache_mb`` bounds the cache (each word costs (P + 8H + 2L (P + H)) * 4 bytes: 51 KB at the
    ``small`` sizes, so the default 1024 MB holds ~20k words); it is emptied and refilled when
    full.
    With ``parallel`` and 2+ torch threads, the two LSTM directions (and the CNN over new words,
    in two halves) run in two threads at once, each with half of the intra-op threads.
    The biLM's weights are read when the Embedder is made, and its ``stateful`` flag is set to
    ``stateful``.
    """

    def __init__(self, bilm: BiLM, stateful: bool = False, cache_mb: float = 1024.0, parallel: bool = True,
                 token_chars: Optional[Callable[[Sequence], Tensor]] = None):
        from .packed_lstm import PackedBiLM
        self.bilm = bilm.eval()
        self.stateful, self.parallel = stateful, parallel
        self.bilm.stateful = stateful
        self.bilm.reset_state()
        cfg = bilm.config
        self.packed = PackedBiLM(bilm)
        per_word = 4 * (cfg.projection_dim + 8 * cfg.lstm_dim + 2 * self.packed.state_width)
        self.cache = TokenEmbeddingCache(bilm.encoder, max(1, int(cache_mb * 2 ** 20 / per_word)),
                                         packed=self.packed, token_chars=token_chars)

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

    @contextmanager
    def _two_threads(self):
        """Yields whether to run two threads of work (``parallel``, 2+ torch threads, CPU); if so,
        each gets half of the intra-op threads until the block ends."""
        total = torch.get_num_threads()
        parallel = self.parallel and total >= 2 and self.device.type == "cpu"
        if parallel:
            torch.set_num_threads(total // 2)
        try:
            yield parallel
        finally:
            torch.set_num_threads(total)

    @torch.inference_mode()
    def prefetch(self, sentences: Iterable[Sequence[str]]) -> int:
        """Caches, in large CNN batches, the words of sentences about to be embedded (stateless
        only; see ``TokenEmbeddingCache.prefetch``); returns the number of words encoded."""
        if self.stateful:
            return 0
        with self._two_threads() as parallel:
            return self.cache.prefetch((w for s in sentences for w in s), parallel)

    @torch.inference_mode()
    def embed(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """sentences (B lists of tokens, none empty) -> layers (B, L+1, T, 2P), lengths (B,).

        Stateless, the layers are a transposed view of a (B, T, L+1, 2P) tensor (no copy made).
        """
        if any(len(s) == 0 for s in sentences):
            raise ValueError("Embedder.embed: empty sentence (drop blank lines before embedding)")
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        if self.stateful:
            out = self.bilm(batch_to_ids([list(s) for s in sentences]).to(self.device))
            return out.layers, lengths
        with self._two_threads() as parallel:
            return self._embed_packed(sentences, parallel), lengths

    @torch.inference_mode()
    def embed_in_windows(self, sentences: Sequence[Sequence[str]], window: int, emit) -> None:
        """The layers ``embed`` gives, computed ``window`` framed slots at a time in bounded memory,
        each window's half-layers passed to ``emit`` (see ``windows.run_in_windows``; with
        ``parallel`` from two threads, one a direction). Stateful, the rows start from and store
        their carried state as ``BiLM.forward`` does."""
        from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN

        from .windows import run_in_windows
        if any(len(s) == 0 for s in sentences):
            raise ValueError("Embedder.embed_in_windows: empty sentence (drop blank lines before embedding)")
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)  # (B,)
        like = self.bilm.encoder.proj.weight
        state = self.bilm.state_for(len(sentences), like) if self.stateful else None
        with self._two_threads() as parallel:
            framed = [w for s in sentences for w in (BOS_TOKEN, *s, EOS_TOKEN)]
            rows = torch.tensor(self.cache.row_ids(framed, parallel), dtype=torch.long)  # valid until the next call
            slot_rows = torch.zeros(len(sentences), int(lengths.max()) + 2, dtype=torch.long)  # 0: the zero row
            mask = torch.arange(slot_rows.shape[1])[None, :] < (lengths + 2)[:, None]  # (B, S)
            slot_rows[mask] = rows
            two = (lambda f, g: self.packed.in_two_threads(f, g, self.device)) if parallel else None
            final = run_in_windows(self.packed, slot_rows, lengths, lambda r: self.cache.lookup(r, 0), window, emit,
                                   state, two)
        if self.stateful:
            self.bilm.store_state(final)

    def _embed_packed(self, sentences: Sequence[Sequence[str]], parallel: bool) -> Tensor:
        """Stateless: first steps from the cache, the other n - 1 steps a direction packed
        (longest sentence first), then unpacked into (B, L+1, T, 2P)."""
        from .packed_lstm import pack_lengths
        B, T = len(sentences), max(len(s) for s in sentences)
        packed, cache, device = self.packed, self.cache, self.device
        ids = torch.tensor(cache.row_ids([w for s in sentences for w in s], parallel), dtype=torch.long)  # (sum n,)
        rest = pack_lengths([len(s) - 1 for s in sentences])  # both directions' runs: n - 1 steps a row
        # Index arithmetic in tensors (a Python loop over tokens here was 3% of a batch, serial).
        lengths = torch.tensor([len(s) for s in sentences])  # (B,)
        firsts = torch.cumsum(lengths, 0) - lengths  # (B,) flat index of each sentence's first token
        order = torch.tensor(rest.order, dtype=torch.long)  # (B,) rows, longest first
        counts = torch.tensor(rest.counts, dtype=torch.long)  # (steps,)
        step = torch.repeat_interleave(torch.arange(len(rest.counts)), counts)  # (N,) step of each packed row
        row = order[torch.arange(step.numel()) - torch.tensor(rest.offsets, dtype=torch.long)[step]]  # (N,)
        # Packed row (step t, row b) is token t + 1 of b going forward, token t going backward.
        tok = firsts[row] + step  # (N,) flat index of the backward token
        run_ids = (ids[tok + 1].to(device), ids[tok].to(device))
        run_pos = ((row * T + step + 1).to(device), (row * T + step).to(device))  # output positions
        last = firsts[order] + lengths[order] - 1
        edge_ids = (ids[firsts[order]].to(device), ids[last].to(device))  # first word forward, last backward
        edge_pos = ((order * T).to(device), (order * T + lengths[order] - 1).to(device))
        token_row = torch.repeat_interleave(torch.arange(B), lengths)  # (sum n,)
        pos = (token_row * T + torch.arange(ids.numel()) - firsts[token_row]).to(device)
        ids = ids.to(device)

        P, L1 = packed.proj, self.n_layers
        out = self.bilm.encoder.proj.weight.new_zeros(B * T, L1, 2, P)  # rows in output order; padding stays zero
        starts = [packed.unflatten(cache.lookup(edge_ids[d], 3 + d)) for d in (0, 1)]  # per layer (B, .)

        def fill_xw0(d: int):
            return lambda buffer: cache.lookup(run_ids[d], 1 + d, out=buffer)  # (N, 4H)

        def write(d: int, layers: list) -> None:
            """In direction d's thread: its half of every layer (the halves are disjoint)."""
            if d == 0:
                out[pos, 0] = cache.lookup(ids, 0).unsqueeze(1).expand(-1, 2, -1)  # the token layer, both halves
            edge = packed.layer_outputs(cache.lookup(edge_ids[d], 0), starts[d])  # the first steps' outputs
            out[edge_pos[d], 1:, d] = torch.stack(edge, 1)  # (B, L, P)
            if layers[0].shape[0]:
                out[run_pos[d], 1:, d] = torch.stack(layers, 1)  # (N, L, P)

        packed.run(rest, (fill_xw0(0), fill_xw0(1)), starts, parallel=parallel, on_done=write)
        return out.view(B, T, L1, 2 * P).transpose(1, 2)  # (B, L1, T, 2P), a view


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
