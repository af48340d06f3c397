"""The linear probe: pooled features against a float64 loop, and what the probe can and cannot read."""
import numpy as np
import pytest
import torch

from elmo_dist.classify.linear_probe import C_GRID, fit_probe, pooled_features


def docs_with_signal(n=300, layers=3, dim=8, informative=1, seed=0):
    """Documents of 3-12 tokens; the label (3 classes) shifts the mean of layer ``informative``'s
    first feature on a random subset of the tokens."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g).tolist()
    docs = []
    for y in labels:
        t = int(torch.randint(3, 13, (1,), generator=g))
        x = torch.randn(layers, t, dim, generator=g)
        x[informative, :, 0] += 2.5 * (y - 1)
        docs.append(x.half())
    split = {"train": list(range(0, 200)), "dev": list(range(200, 240)), "test": list(range(240, n))}
    return docs, labels, split


def test_pooled_features_match_a_float64_loop():
    docs, _, _ = docs_with_signal(n=5)
    got = pooled_features(docs)
    for i, x in enumerate(docs):
        x = x.double().numpy()  # (L+1, T, D)
        want = np.concatenate([np.concatenate([x[l].mean(axis=0), x[l].max(axis=0)]) for l in range(x.shape[0])])
        assert np.allclose(got[i], want, atol=1e-6)
    assert got.shape == (5, 3 * 2 * 8) and got.dtype == np.float32


def test_probe_reads_a_linear_signal_and_not_noise():
    docs, labels, split = docs_with_signal()
    r = fit_probe(docs, labels, split)
    y_test = np.array([labels[i] for i in split["test"]])
    assert (r.test_pred == y_test).mean() >= 0.85  # chance is 1/3
    assert r.converged and r.features == 48 and list(r.dev_accuracy_by_C) == [str(float(c)) for c in C_GRID]
    best = max(r.dev_accuracy_by_C.values())
    assert r.C == next(float(c) for c in C_GRID if r.dev_accuracy_by_C[str(float(c))] == best)
    y_dev = np.array([labels[i] for i in split["dev"]])
    assert r.dev_accuracy_by_C[str(r.C)] == pytest.approx((r.dev_pred == y_dev).mean())
    # the same documents with the signal removed: the probe is near chance
    blank = [x.clone() for x in docs]
    for x, y in zip(blank, labels):
        x[1, :, 0] -= 2.5 * (y - 1)
    assert (fit_probe(blank, labels, split).test_pred == y_test).mean() <= 0.55


def test_probe_says_when_lbfgs_ran_out_of_iterations():
    docs, labels, split = docs_with_signal()
    from sklearn.exceptions import ConvergenceWarning
    with pytest.warns(ConvergenceWarning):
        assert not fit_probe(docs, labels, split, grid=(100.0,), max_iter=2).converged


def test_probe_bad_input():
    docs, labels, split = docs_with_signal(n=260)
    with pytest.raises(ValueError, match="probe: the C grid is empty"):
        fit_probe(docs, labels, split, grid=())
    with pytest.raises(ValueError, match="probe: the training split holds fewer than two classes"):
        fit_probe(docs, [0] * len(labels), split)

