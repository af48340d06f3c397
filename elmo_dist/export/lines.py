"""Embedding many lines into per-line arrays: the selected layers per token, or sentence vectors.

What one line (n tokens) becomes, as ``OutputSpec(mode, sentence_vectors)`` says:

    mode "all"        (L+1, n, 2P)  every layer: the token layer, then each LSTM layer
         "top"        (n, 2P)       the top LSTM layer
         "average"    (n, 2P)       the mean of the L+1 layers (AllenNLP's --average)
    sentence_vectors  the mean of that over the n tokens: (L+1, 2P), or (2P,) with top/average,
                      i.e. v = (1/n) sum_t y_t; a line with no tokens gets zeros (a masked mean
                      over nothing, as AllenNLP's ``masked_mean`` gives)

``embed_lines`` runs an ``Embedder`` over (key, tokens) items and hands each result to a store
(HDF5 datasets, or numpy arrays in memory). Lines longer than ``window`` tokens are embedded
window by window with the LSTM state carried (``windows.py``: the same vectors as one pass,
in bounded memory); their per-token arrays are allocated at full size in the store and filled
a window and a direction at a time, their sentence vectors accumulated in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
from torch import Tensor

from .embedder import Embedder, batches_by_length

MODES = ("all", "top", "average")


@dataclass(frozen=True)
class OutputSpec:
    mode: str = "all"
    """all (every layer), top (the top LSTM layer) or average (the mean of the layers)."""
    sentence_vectors: bool = False
    """Mean over the line's tokens instead of one vector per token."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")

    def shape(self, n_tokens: int, n_layers: int, dim: int) -> tuple:
        """Shape of one line's array (n_layers = L+1, dim = 2P)."""
        per_token = () if self.sentence_vectors else (n_tokens,)
        return ((n_layers,) if self.mode == "all" else ()) + per_token + (dim,)

    def select(self, layers: Tensor) -> Tensor:
        """(B, L+1, T, D) -> (B, L+1, T, D) for all, (B, T, D) for top and average (D: 2P or a half)."""
        if self.mode == "all":
            return layers
        if self.mode == "top":
            return layers[:, -1]
        return layers.mean(dim=1)


class Store(Protocol):
    def put(self, key: Any, data: np.ndarray) -> None:
        """Keeps one line's finished array."""

    def create(self, key: Any, shape: tuple) -> Any:
        """A zero float32 array of ``shape`` for one line, filled by slice assignment."""


class ArrayStore:
    """Results in memory: ``arrays[key]`` (numpy float32)."""

    def __init__(self):
        self.arrays: dict = {}

    def put(self, key, data: np.ndarray) -> None:
        self.arrays[key] = np.ascontiguousarray(data, dtype=np.float32)

    def create(self, key, shape: tuple) -> np.ndarray:
        self.arrays[key] = np.zeros(shape, dtype=np.float32)
        return self.arrays[key]


def embed_lines(embedder: Embedder, items: Sequence[tuple[Any, Sequence[str]]], spec: OutputSpec, store: Store,
                batch_size: int = 64, max_batch_tokens: Optional[int] = 4096, window: Optional[int] = None,
                on_batch: Optional[Callable[[int, int], None]] = None) -> int:
    """Embeds every (key, tokens) item (none empty) into ``store``; returns the tokens embedded.
    ``on_batch(lines, tokens)`` is called after each batch (a progress bar).

    Stateless, batches are formed by length and each line over ``window`` tokens is embedded
    alone in windows. Stateful, batches follow the order of ``items`` (each row carries its
    state to the same row of the next batch), and a batch holding a line over ``window`` runs
    in windows as a whole, so that every row's state is carried exactly. ``window=None``: no
    windows (the caller has cut long lines, or accepts one pass of any length).
    """
    lengths = [len(tokens) for _, tokens in items]
    is_long = [window is not None and n > window for n in lengths]
    if embedder.stateful:
        groups = [list(range(i, min(i + batch_size, len(items)))) for i in range(0, len(items), batch_size)]
    else:
        short = [i for i in range(len(items)) if not is_long[i]]
        groups = [[short[j] for j in g] for g in batches_by_length([lengths[i] for i in short], batch_size,
                                                                    max_batch_tokens)]
        groups += [[i] for i in range(len(items)) if is_long[i]]
    for group in groups:
        batch = [items[i] for i in group]
        if any(is_long[i] for i in group):
            _embed_windowed(embedder, batch, spec, store, window)
        else:
            _embed_whole(embedder, batch, spec, store)
        if on_batch is not None:
            on_batch(len(batch), sum(lengths[i] for i in group))
    return sum(lengths)


def _embed_whole(embedder: Embedder, batch: list, spec: OutputSpec, store: Store) -> None:
    layers, lengths = embedder.embed([tokens for _, tokens in batch])  # (B, L+1, T, 2P), (B,)
    selected = spec.select(layers).float()  # (B, [L+1,] T, 2P), zeros at padding
    if spec.sentence_vectors:
        counts = lengths.to(selected.device, selected.dtype).view(-1, *[1] * (selected.dim() - 1))
        means = (selected.sum(dim=-2, keepdim=True) / counts).squeeze(-2).cpu().numpy()  # (B, [L+1,] 2P)
        for b, (key, _) in enumerate(batch):
            store.put(key, means[b])
        return
    selected = selected.cpu().numpy()
    for b, (key, tokens) in enumerate(batch):
        store.put(key, selected[b, ..., :len(tokens), :])


def _embed_windowed(embedder: Embedder, batch: list, spec: OutputSpec, store: Store, window: int) -> None:
    """Per-token arrays filled a window and a direction (column half) at a time; sentence vectors
    as float64 sums of those halves, divided by n at the end."""
    L1, D, P = embedder.n_layers, embedder.output_dim, embedder.output_dim // 2
    lengths = [len(tokens) for _, tokens in batch]
    if spec.sentence_vectors:
        sums = [np.zeros(spec.shape(n, L1, D), dtype=np.float64) for n in lengths]
    else:
        targets = [store.create(key, spec.shape(n, L1, D)) for (key, _), n in zip(batch, lengths)]

    def emit(part) -> None:
        selected = spec.select(part.layers).float().cpu().numpy()  # (B, [L+1,] w, P)
        cols = slice(part.direction * P, (part.direction + 1) * P)
        for b, n in enumerate(lengths):
            valid = min(n - part.start, selected.shape[-2])
            if valid <= 0:
                continue
            piece = selected[b, ..., :valid, :]  # ([L+1,] valid, P)
            if spec.sentence_vectors:
                sums[b][..., cols] += piece.sum(axis=-2, dtype=np.float64)
            else:
                targets[b][..., part.start:part.start + valid, cols] = piece

    embedder.embed_in_windows([tokens for _, tokens in batch], window, emit)
    if spec.sentence_vectors:
        for (key, _), total, n in zip(batch, sums, lengths):
            store.put(key, (total / n).astype(np.float32))


def empty_result(spec: OutputSpec, n_layers: int, dim: int) -> np.ndarray:
    """What a line with no tokens gets: an empty (T = 0) array, or a zero sentence vector."""
    return np.zeros(spec.shape(0, n_layers, dim), dtype=np.float32)
