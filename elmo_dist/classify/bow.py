"""Bag-of-words features for the baseline: TF-IDF in numpy, fitted on the training documents.

Tokens are lower-cased. The vocabulary is the words in at least ``min_df`` training documents,
the ``max_features`` most frequent by document frequency (ties by word). A document's vector is
``(1 + log tf) * idf`` with ``idf = log((1 + N) / (1 + df)) + 1`` (N training documents),
scaled to unit L2 norm; words outside the vocabulary are ignored.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np


class TfIdf:
    def __init__(self, min_df: int = 2, max_features: int = 20_000):
        if min_df < 1 or max_features < 1:
            raise ValueError(f"TfIdf: min_df and max_features must be >= 1; got {min_df}, {max_features}")
        self.min_df, self.max_features = min_df, max_features
        self.vocab: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)

    def fit(self, docs: Sequence[Sequence[str]]) -> "TfIdf":
        df = Counter()
        for tokens in docs:
            df.update({t.lower() for t in tokens})
        words = sorted((w for w, c in df.items() if c >= self.min_df), key=lambda w: (-df[w], w))
        words = words[:self.max_features]
        if not words:
            raise ValueError(f"bag of words: no word occurs in {self.min_df} or more training documents")
        self.vocab = {w: i for i, w in enumerate(words)}
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[w])) + 1.0 for w in words], dtype=np.float32)
        return self

    def transform(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """(N, V) float32, rows of unit norm (zero for a document with no known word)."""
        out = np.zeros((len(docs), len(self.vocab)), dtype=np.float32)
        for i, tokens in enumerate(docs):
            counts = Counter(self.vocab[w] for w in (t.lower() for t in tokens) if w in self.vocab)
            if not counts:
                continue
            cols = np.fromiter(counts.keys(), dtype=np.int64)
            tf = np.fromiter(counts.values(), dtype=np.float32)
            out[i, cols] = (1.0 + np.log(tf)) * self.idf[cols]
            out[i] /= np.linalg.norm(out[i])
        return out
