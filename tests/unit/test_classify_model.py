"""Classifier modules and training: every mode learns a label that lives in one layer; weights are a softmax."""
import numpy as np
import pytest
import torch

from elmo_dist.classify.bow import TfIdf
from elmo_dist.classify.model import LayerAttention, LayerClassifier, PoolEncoder, ScalarMixCombiner
from elmo_dist.classify.pipeline import summarise
from elmo_dist.classify.report import classification_report
from elmo_dist.classify.train import FitConfig, LayerBatcher, fit, mean_attention, predict

N_LAYERS, DIM, CLASSES, INFORMATIVE = 3, 8, 3, 2
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(n=180, seed=0):
    """Documents of 4-10 tokens, (L+1, T, D) each: noise everywhere, plus a class mean on every token of
    layer INFORMATIVE only. Returns the float16 tensors, labels and a 100/30/50 split."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, DIM, generator=g)
    docs, labels = [], []
    for i in range(n):
        y = i % CLASSES
        x = torch.randn(N_LAYERS, int(torch.randint(4, 11, (1,), generator=g)), DIM, generator=g)
        x[INFORMATIVE] += means[y]
        docs.append(x.half())
        labels.append(y)
    return docs, labels, list(range(100)), list(range(100, 130)), list(range(130, n))


def accuracy(model, batcher, labels, idx):
    pred, _ = predict(model, batcher, idx, labels)
    return float((pred == np.array([labels[i] for i in idx])).mean())


@pytest.mark.parametrize("combine,encoder", [("scalar-mix", "mean"), ("equal", "mean"), ("learned", "mean"),
                                             ("scalar-mix", "bilstm"), ("learned", "max"), ("scalar-mix", "ffpool")])
def test_each_mode_learns_well_above_chance(combine, encoder):
    docs, labels, train, dev, test = synthetic()
    torch.manual_seed(0)
    model = LayerClassifier(N_LAYERS, DIM, CLASSES, combine, encoder, hidden=16, dropout=0.1)
    batcher = LayerBatcher(docs, CPU)
    result = fit(model, batcher, labels, train, dev, FitConfig(epochs=12, patience=4, batch_size=20, lr=1e-2),
                 progress=False)
    assert accuracy(model, batcher, labels, test) >= 0.85  # chance: 1/3
    assert result.dev_accuracy == max(h["dev_accuracy"] for h in result.history)
    if combine == "scalar-mix":
        weights = model.combine.layer_weights()
        assert torch.isclose(weights.sum(), torch.tensor(1.0), atol=1e-6)
        assert int(weights.argmax()) == INFORMATIVE  # the mix found the layer that holds the label
    if combine == "learned":
        mean = mean_attention(model, batcher, test)
        assert abs(sum(mean) - 1.0) < 1e-5 and int(np.argmax(mean)) == INFORMATIVE


def test_layer0_baseline_cannot_see_the_informative_layer():
    docs, labels, train, dev, test = synthetic()
    torch.manual_seed(0)
    model = LayerClassifier(N_LAYERS, DIM, CLASSES, "layer0", "mean", hidden=16, dropout=0.1)
    batcher = LayerBatcher(docs, CPU)
    fit(model, batcher, labels, train, dev, FitConfig(epochs=5, patience=2, batch_size=20, lr=1e-2), progress=False)
    assert accuracy(model, batcher, labels, test) < 0.6


def test_layer_weights_are_a_softmax_and_equal_weights_stay_frozen():
    torch.manual_seed(1)
    mix = ScalarMixCombiner(N_LAYERS)
    with torch.no_grad():
        mix.mix.scalar_parameters.copy_(torch.tensor([2.0, -1.0, 0.5]))
    w = mix.layer_weights()
    assert torch.isclose(w.sum(), torch.tensor(1.0), atol=1e-6) and (w > 0).all()
    assert torch.allclose(w, torch.softmax(torch.tensor([2.0, -1.0, 0.5]), 0))
    attention = LayerAttention(N_LAYERS, DIM, hidden=5)
    a = attention.token_weights(torch.randn(2, N_LAYERS, 7, DIM))  # (B, T, L+1)
    assert a.shape == (2, 7, N_LAYERS) and torch.allclose(a.sum(-1), torch.ones(2, 7), atol=1e-6)
    equal = LayerClassifier(N_LAYERS, DIM, CLASSES, "equal", "mean")
    assert not any(p.requires_grad for p in equal.combine.parameters())
    assert torch.allclose(equal.combine.layer_weights(), torch.full((N_LAYERS,), 1 / N_LAYERS))


def test_pooling_ignores_padding():
    x = torch.tensor([[[1.0, -5.0], [3.0, 1.0], [100.0, 100.0]]])  # (1, 3, 2), the last token is padding
    mask = torch.tensor([[True, True, False]])
    assert torch.allclose(PoolEncoder(2, "mean")(x, mask), torch.tensor([[2.0, -2.0]]))
    assert torch.allclose(PoolEncoder(2, "max")(x, mask), torch.tensor([[3.0, 1.0]]))


def test_classification_report_figures():
    r = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2], ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    f1 = [0.5, 2 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 / 1.5]
    assert r["macro_f1"] == pytest.approx(np.mean(f1))
    assert r["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": f1[1], "support": 2})


def test_tfidf_rows_are_unit_norm_and_ignore_unknown_words():
    tfidf = TfIdf(min_df=2).fit([["Goal", "goal", "win"], ["goal", "vote"], ["vote", "tax"], ["win"]])
    assert set(tfidf.vocab) == {"goal", "vote", "win"}
    x = tfidf.transform([["goal", "goal", "zzz"], ["zzz"]])
    assert np.isclose(np.linalg.norm(x[0]), 1.0) and not x[1].any()


def test_summary_mean_and_std_over_seeds():
    runs = [{"model": "m", "baseline": False, "test": {"accuracy": a, "macro_f1": a - 0.1}, "dev": {"accuracy": 0.5},
             "layer_weights": [0.2, 0.8]} for a in (0.8, 0.9)]
    s = summarise(runs)["m"]
    assert s["test_accuracy"] == pytest.approx(0.85) and s["test_accuracy_std"] == pytest.approx(0.0707, abs=1e-4)
    assert s["seeds"] == 2 and s["layer_weights"] == pytest.approx([0.2, 0.8])


@pytest.mark.parametrize("combine", ["scalar-mix", "equal", "layer0"])
def test_scalar_mix_trains_at_its_own_learning_rate(combine):
    """Adam's first step moves every parameter with a nonzero gradient by its group's lr (times
    |g| / (|g| + eps) ~ 1): the mix's w and gamma by lr * scale, everything else by lr."""
    torch.manual_seed(0)
    model = LayerClassifier(N_LAYERS, DIM, CLASSES, combine, "mean", dropout=0.0)
    lr, scale = 1e-3, 30.0
    opt = torch.optim.Adam(model.param_groups(lr, scale), lr=1.0)  # a group without its own lr would move by 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers, mask = torch.randn(4, N_LAYERS, 5, DIM), torch.ones(4, 5, dtype=torch.bool)
    torch.nn.functional.cross_entropy(model(layers, mask), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    mix = {"combine.mix.scalar_parameters", "combine.mix.gamma"} if combine == "scalar-mix" else set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        moved = (p.detach() - before[name]).abs()[p.grad != 0]
        expected = lr * scale if name in mix else lr
        torch.testing.assert_close(moved, torch.full_like(moved, expected), rtol=1e-3, atol=0), name
    assert mix <= {n for n, _ in model.named_parameters()}
