"""The bag-of-words baseline as a user would build it: scikit-learn's ``TfidfVectorizer`` (sparse,
its defaults: raw counts x smoothed idf, unit L2 rows, every training word) and
``LogisticRegression`` (lbfgs, multinomial), on the same tokens as every other model, lower-cased.

C is chosen from ``C_GRID`` by dev accuracy (ties: the smaller C, the stronger penalty); the
test split is only predicted, never used to choose. The fit draws no random numbers (lbfgs from
zero weights), so the model is trained once, not once per seed: the pipeline records one run
(``seed`` None) and the summary has ``seeds`` 1 and std 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

C_GRID = (1.0, 10.0, 100.0)
"""Inverse L2 strengths tried on the dev split."""


def lower_tokens(tokens: Sequence[str]) -> list:
    """The vectorizer's analyzer: the document's own tokens, lower-cased (picklable, unlike a lambda)."""
    return [t.lower() for t in tokens]


@dataclass
class SklearnBowResult:
    C: float
    """The C chosen on the dev split."""
    dev_accuracy_by_C: dict
    """Dev accuracy of every C tried (keys: str(C))."""
    vocabulary: int
    """Words the vectorizer kept (all the training documents' words)."""
    dev_pred: np.ndarray
    """Predicted classes of split['dev'], in its order."""
    test_pred: np.ndarray
    """Predicted classes of split['test'], in its order."""
    test_loss: float
    """Mean cross-entropy on the test split (probabilities clipped at 1e-15)."""
    seconds: float
    """Wall time of the vectorizer and every fit."""


def fit_sklearn_bow(tokens: Sequence[Sequence[str]], labels: Sequence[int], split: dict,
                    grid: Sequence[float] = C_GRID, max_iter: int = 1000) -> SklearnBowResult:
    """Fits the vectorizer on split['train'], one LogisticRegression per C in ``grid``, keeps the
    best on split['dev'] and predicts split['dev'] and split['test'] (see the module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if not grid:
        raise ValueError("bow-sklearn: the C grid is empty")
    start = time.time()
    y = {s: np.asarray([labels[i] for i in split[s]], dtype=np.int64) for s in ("train", "dev", "test")}
    if len(set(y["train"].tolist())) < 2:
        raise ValueError("bow-sklearn: the training split holds fewer than two classes")
    vectorizer = TfidfVectorizer(analyzer=lower_tokens)
    x_train = vectorizer.fit_transform([tokens[i] for i in split["train"]])  # (N, V) sparse
    x_dev, x_test = (vectorizer.transform([tokens[i] for i in split[s]]) for s in ("dev", "test"))
    by_c, best = {}, None
    for c in grid:
        clf = LogisticRegression(C=float(c), max_iter=max_iter).fit(x_train, y["train"])
        acc = float((clf.predict(x_dev) == y["dev"]).mean()) if len(y["dev"]) else 0.0
        by_c[str(float(c))] = acc
        if best is None or acc > best[0]:
            best = (acc, float(c), clf)
    _, c, clf = best
    return SklearnBowResult(c, by_c, len(vectorizer.vocabulary_), clf.predict(x_dev), clf.predict(x_test),
                            _cross_entropy(clf, x_test, y["test"]), time.time() - start)


def _cross_entropy(clf, x, y: np.ndarray) -> float:
    """Mean -log p(true class); a class the classifier never saw in training has p = 1e-15."""
    if len(y) == 0:
        return 0.0
    proba = np.full((len(y), max(int(y.max()), int(clf.classes_.max())) + 1), 1e-15)
    proba[:, clf.classes_] = np.clip(clf.predict_proba(x), 1e-15, 1.0)  # (N, C)
    return float(-np.log(proba[np.arange(len(y)), y]).mean())
