"""The bag-of-words baseline as a user would build it: scikit-learn's ``TfidfVectorizer`` (sparse,
its defaults: raw counts x smoothed idf, unit L2 rows, every training word) and
``LogisticRegression`` (lbfgs, multinomial, C chosen on dev: logistic.py), on the same tokens as
every other model, lower-cased.
"""
from __future__ import annotations

import time
from typing import Sequence

from .logistic import LogisticResult, fit_logistic, split_labels

C_GRID = (1.0, 10.0, 100.0)
"""Inverse L2 strengths tried on the dev split."""


def lower_tokens(tokens: Sequence[str]) -> list:
    """The vectorizer's analyzer: the document's own tokens, lower-cased (picklable, unlike a lambda)."""
    return [t.lower() for t in tokens]


def fit_sklearn_bow(tokens: Sequence[Sequence[str]], labels: Sequence[int], split: dict,
                    grid: Sequence[float] = C_GRID, max_iter: int = 1000) -> LogisticResult:
    """Fits the vectorizer on split['train'], then logistic regression with C from ``grid`` chosen
    on split['dev']; ``features`` is the vectorizer's vocabulary (all the training words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    start = time.time()
    y = split_labels(labels, split, "bow-sklearn")
    vectorizer = TfidfVectorizer(analyzer=lower_tokens)
    x = {"train": vectorizer.fit_transform([tokens[i] for i in split["train"]])}  # (N, V) sparse
    x.update({s: vectorizer.transform([tokens[i] for i in split[s]]) for s in ("dev", "test")})
    return fit_logistic(x, y, grid, "bow-sklearn", start, max_iter)
