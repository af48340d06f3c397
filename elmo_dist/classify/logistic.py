"""scikit-learn's LogisticRegression with C chosen on the dev split: the shared fit of the two
deterministic models of the classify stage (bow-sklearn on TF-IDF, the linear probe on pooled layers).

C is chosen from the grid by dev accuracy (ties: the smaller C, the stronger penalty); the test
split is only predicted, never used to choose. lbfgs starts from zero weights and draws no random
numbers, so each model is trained once, not once per seed: the pipeline records one run (``seed``
None) and the summary has ``seeds`` 1 and std 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class LogisticResult:
    C: float
    """The C chosen on the dev split."""
    dev_accuracy_by_C: dict
    """Dev accuracy of every C tried (keys: str(C))."""
    features: int
    """Input features (bow-sklearn: the vectorizer's vocabulary)."""
    dev_pred: np.ndarray
    """Predicted classes of split['dev'], in its order."""
    test_pred: np.ndarray
    """Predicted classes of split['test'], in its order."""
    test_loss: float
    """Mean cross-entropy on the test split (probabilities clipped at 1e-15)."""
    seconds: float
    """Wall time of the features and every fit."""
    converged: bool
    """lbfgs stopped by its tolerance, not by ``max_iter``, for the chosen C (the analogue of a
    layer classifier that early stopping, not the epoch cap, ended)."""


def split_labels(labels: Sequence[int], split: dict, name: str) -> dict:
    """{train, dev, test: int64 labels}; a one-line error when the training split holds one class."""
    y = {s: np.asarray([labels[i] for i in split[s]], dtype=np.int64) for s in ("train", "dev", "test")}
    if len(set(y["train"].tolist())) < 2:
        raise ValueError(f"{name}: the training split holds fewer than two classes")
    return y


def fit_logistic(x: dict, y: dict, grid: Sequence[float], name: str, start: float,
                 max_iter: int = 1000) -> LogisticResult:
    """One LogisticRegression per C in ``grid`` on x['train'] (dense or sparse (N, F)), the best on
    x['dev'] kept, x['dev'] and x['test'] predicted; ``start``: time.time() when the features began."""
    from sklearn.linear_model import LogisticRegression

    if not grid:
        raise ValueError(f"{name}: the C grid is empty")
    by_c, best = {}, None
    for c in grid:
        clf = LogisticRegression(C=float(c), max_iter=max_iter).fit(x["train"], y["train"])
        acc = float((clf.predict(x["dev"]) == y["dev"]).mean()) if len(y["dev"]) else 0.0
        by_c[str(float(c))] = acc
        if best is None or acc > best[0]:
            best = (acc, float(c), clf)
    _, c, clf = best
    return LogisticResult(c, by_c, x["train"].shape[1], clf.predict(x["dev"]), clf.predict(x["test"]),
                          _cross_entropy(clf, x["test"], y["test"]), time.time() - start,
                          bool(int(clf.n_iter_.max()) < max_iter))


def _cross_entropy(clf, x, y: np.ndarray) -> float:
    """Mean -log p(true class); a class the classifier never saw in training has p = 1e-15."""
    if len(y) == 0:
        return 0.0
    proba = np.full((len(y), max(int(y.max()), int(clf.classes_.max())) + 1), 1e-15)
    proba[:, clf.classes_] = np.clip(clf.predict_proba(x), 1e-15, 1.0)  # (N, C)
    return float(-np.log(proba[np.arange(len(y)), y]).mean())
