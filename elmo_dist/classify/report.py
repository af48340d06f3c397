"""Evaluation figures: accuracy, macro-F1, a per-class report, the confusion matrix and its plot."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """accuracy, macro_f1 (unweighted mean of the per-class F1), per_class {name: precision,
    recall, f1, support} and confusion (rows true, columns predicted). A class never predicted
    has precision 0; one absent from y_true has recall 0 and support 0 (and counts in the macro mean)."""
    m = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(m).astype(np.float64)
    predicted, support = m.sum(0), m.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = int(m.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                             "support": int(support[k])} for k, name in enumerate(classes)},
        "confusion": m.tolist(),
    }


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path | str, title: str) -> None:
    """The confusion matrix as a PNG with counts in the cells (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from elmo_dist.utils import atomic_path

    m = np.asarray(matrix)
    n = len(classes)
    fig = Figure(figsize=(1.2 * n + 2.5, 1.1 * n + 1.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    high = m.max() / 2 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > high else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
