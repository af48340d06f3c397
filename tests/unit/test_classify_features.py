"""The classifier's feature path: ZCA whitening against a float64 numpy reference, the ffpool
encoder against a per-document loop, and the pretraining text cut along the classify split."""
import numpy as np
import pytest
import torch

from elmo_dist.classify.data import LabeledDocs, make_split
from elmo_dist.classify.model import FeedForwardPoolEncoder
from elmo_dist.classify.train import LayerBatcher, layer_normalization, layer_whitening


def anisotropic_docs(n=40, layers=2, dim=6, seed=0):
    """(L+1, T, D) documents with correlated, very unequal feature scales and a non-zero mean."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(layers, dim, dim)) * np.logspace(0, 2, dim)  # columns scaled 1..100
    docs = []
    for _ in range(n):
        z = rng.normal(size=(layers, int(rng.integers(3, 9)), dim))
        docs.append(torch.from_numpy(z @ mix + 5.0).half())
    return docs


def numpy_zca(docs, idx, ridge):
    """Reference: per layer, mean, covariance over all tokens, W = U (lambda + ridge mean(lambda))^-1/2 U^T."""
    x = np.concatenate([docs[i].double().numpy() for i in idx], axis=1)  # (L+1, N, D)
    out_mu, out_w = [], []
    for layer in x:
        mu = layer.mean(0)
        cov = np.cov(layer - mu, rowvar=False, bias=True)
        lam, u = np.linalg.eigh(cov)
        lam = np.clip(lam, 0, None)
        out_mu.append(mu)
        out_w.append(u @ np.diag(1 / np.sqrt(lam + ridge * lam.mean())) @ u.T)
    return np.stack(out_mu), np.stack(out_w)


def test_whitening_matches_a_float64_reference_and_whitens_the_training_tokens():
    docs = anisotropic_docs()
    train = list(range(0, 30))
    # The ridge is relative to the mean eigenvalue (dominated by the 100x columns): keep it tiny
    # here so that the whitened covariance is the identity in every direction.
    mu, w = layer_whitening(docs, train, ridge=1e-10)
    ref_mu, ref_w = numpy_zca(docs, train, 1e-10)
    assert np.allclose(mu[:, 0].numpy(), ref_mu, rtol=1e-4, atol=1e-3)
    assert np.allclose(w.numpy(), ref_w, rtol=1e-3, atol=1e-5)
    batch = LayerBatcher(docs, torch.device("cpu"), (mu, w))(train)[0]  # (B, L+1, T, D)
    mask = LayerBatcher(docs, torch.device("cpu"))(train)[1]
    tokens = batch.transpose(1, 2)[mask].double()  # (N, L+1, D)
    for layer in range(tokens.shape[1]):
        cov = np.cov(tokens[:, layer].numpy(), rowvar=False, bias=True)
        assert np.allclose(cov, np.eye(cov.shape[0]), atol=2e-2), cov  # unit covariance, not just unit variance


def test_whitening_ridge_keeps_a_duplicated_layer_finite():
    docs = [torch.cat([d, d], dim=-1) for d in anisotropic_docs(dim=3)]  # layer 0 style: [e, e], rank D/2
    mu, w = layer_whitening(docs, range(len(docs)))
    assert torch.isfinite(w).all()
    with pytest.raises(ValueError, match="ridge"):
        layer_whitening(docs, range(3), ridge=0.0)
    with pytest.raises(ValueError, match="whiten, standardize, none"):
        layer_normalization("zca", docs, range(3))
    assert layer_normalization("none", docs, range(3)) is None


def test_ffpool_equals_a_per_document_loop():
    torch.manual_seed(0)
    enc = FeedForwardPoolEncoder(5, 7)
    x = torch.randn(3, 6, 5)  # (B, T, D)
    lengths = [6, 2, 4]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    x[~mask] = 1e3  # padding must not leak into mean or max
    out = enc(x, mask)
    for b, n in enumerate(lengths):
        u = torch.relu(x[b, :n].double() @ enc.ff.weight.double().T + enc.ff.bias.double())  # (n, H)
        ref = torch.cat([u.mean(0), u.max(0).values])
        assert torch.allclose(out[b].double(), ref, atol=1e-5)


def test_pretraining_text_holds_no_test_document(tmp_path):
    from elmo_dist.classify.corpus import write_pretraining_text
    texts = [f"Title {k}\nbody of doc{k} with 3 words" for k in range(30)]
    docs = LabeledDocs(texts, [k % 3 for k in range(30)], ["a", "b", "c"], [f"d{k}" for k in range(30)],
                       list(range(30)))
    written = write_pretraining_text(docs, tmp_path / "corpus", tokenizer="whitespace", style="ptb")
    split = make_split(docs, (0.7, 0.1, 0.2), 13)
    for name in ("train", "dev", "test"):
        lines = written[name].read_text().splitlines()
        seen = {tok for line in lines for tok in line.split() if tok.startswith("doc")}
        assert seen == {f"doc{k}" for k in split[name]}  # each file holds exactly its split's documents
        words = " ".join(lines).split()
        assert "N" in words and all(w == w.lower() for w in words if w != "N")  # ptb style: lower case, 3 -> N
    assert written["tokens"]["train"] == sum(len(line.split()) for line in written["train"].read_text().splitlines())


def test_standardize_gives_every_feature_zero_mean_unit_std_on_train():
    docs = anisotropic_docs()
    train = list(range(30))
    batch, mask = LayerBatcher(docs, torch.device("cpu"), layer_normalization("standardize", docs, train))(train)
    tokens = batch.transpose(1, 2)[mask].double().numpy()  # (N, L+1, D)
    ref = np.concatenate([docs[i].double().numpy() for i in train], axis=1).transpose(1, 0, 2)  # (N, L+1, D)
    assert np.allclose(tokens, (ref - ref.mean(0)) / ref.std(0), atol=1e-3)
