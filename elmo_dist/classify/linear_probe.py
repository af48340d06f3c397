"""The linear probe: what the biLM's layers hold about the label, read by a linear model.

Each document's layers (L+1, T, D) become one vector, every layer pooled over its T tokens by mean
and by max and the pools concatenated, (2 (L+1) D,); the features are standardised with the
training documents' mean and std, and scikit-learn's LogisticRegression reads them, C chosen on
dev (logistic.py). A linear reader cannot build word detectors out of a random hash of the
spelling, as the ffpool classifier can; so the probe of the trained biLM against the probe of the
untrained one measures the information pretraining put into the layers. On BBC News (64 tokens,
demo biLM) the trained layers' probe rose from 0.59 at 400 steps to 0.79 at 8,256, against the
untrained layers' 0.67, while the ffpool classifier stayed at 0.87-0.92 with either.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from .logistic import LogisticResult, fit_logistic, split_labels

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
"""Inverse L2 strengths tried on the dev split (standardised features: BBC's best were 0.003-0.1)."""


def pooled_features(docs: Sequence[torch.Tensor]) -> np.ndarray:
    """Per document (L+1, T, D) -> [mean_t h_0t; max_t h_0t; ...; mean_t h_Lt; max_t h_Lt], float32 (N, 2 (L+1) D)."""
    out = []
    for x in docs:
        x = x.float()  # (L+1, T, D)
        pools = torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1)  # (L+1, 2, D)
        out.append(pools.reshape(-1))
    return torch.stack(out).numpy()


def fit_probe(docs: Sequence[torch.Tensor], labels: Sequence[int], split: dict, grid: Sequence[float] = C_GRID,
              name: str = "probe", max_iter: int = 3000) -> LogisticResult:
    """Pooled features of every document, standardised on split['train'] (a constant feature stays
    0), then logistic regression with C from ``grid`` chosen on split['dev']."""
    start = time.time()
    y = split_labels(labels, split, name)
    features = pooled_features(docs)  # (N, F)
    train = features[split["train"]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    z = (features - mean) / np.where(std > 0, std, 1.0)
    return fit_logistic({s: z[split[s]] for s in ("train", "dev", "test")}, y, grid, name, start, max_iter)
