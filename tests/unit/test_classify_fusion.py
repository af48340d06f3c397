"""ELMo + bag of words: the fusion model learns a label that needs both the layers and the words."""
import numpy as np
import pytest
import torch

from elmo_dist.classify.bow import TfIdf
from elmo_dist.classify.model import BagOfWordsClassifier, FusionClassifier, LayerClassifier
from elmo_dist.classify.train import DenseBatcher, FitConfig, FusionBatcher, LayerBatcher, fit, predict

pytestmark = pytest.mark.usefixtures("one_thread")
N_LAYERS, DIM = 3, 8
CPU = torch.device("cpu")


def two_bit_docs(n=300, seed=0):
    """label = a + b (3 classes, 1/4, 1/2, 1/4): bit a shifts every token of layer 2 by +-m, bit b
    is the word `on` or `off` among random filler words. Either input alone leaves a + b
    ambiguous half the time (best possible accuracy 0.5); both together determine it."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = 2.5 * torch.randn(DIM, generator=g)
    layers, tokens, labels = [], [], []
    for i in range(n):
        a, b = int(rng.integers(2)), int(rng.integers(2))
        T = int(rng.integers(4, 11))
        x = torch.randn(N_LAYERS, T, DIM, generator=g)
        x[2] += m if a else -m
        words = [f"w{k}" for k in rng.integers(0, 30, size=T - 1)]
        words.insert(int(rng.integers(0, T)), "on" if b else "off")
        layers.append(x.half())
        tokens.append(words)
        labels.append(a + b)
    return layers, tokens, labels, list(range(180)), list(range(180, 240)), list(range(240, n))


def test_fusion_needs_and_uses_both_inputs():
    layers, tokens, labels, train, dev, test = two_bit_docs()
    tfidf = TfIdf().fit([tokens[i] for i in train])
    words = DenseBatcher(tfidf.transform(tokens), CPU)
    lb = LayerBatcher(layers, CPU)
    cfg = FitConfig(epochs=20, patience=6, batch_size=10, lr=2e-2)
    bow_lr = 0.1  # one informative word of unit-norm TF-IDF rows: small features, a weight that must grow

    def test_accuracy(model, batcher, groups=None, lr=cfg.lr):
        fit(model, batcher, labels, train, dev, FitConfig(cfg.epochs, cfg.patience, cfg.batch_size, lr),
            progress=False, param_groups=groups)
        pred, _ = predict(model, batcher, test, labels)
        return float((pred == np.array([labels[i] for i in test])).mean())

    torch.manual_seed(0)
    layers_only = test_accuracy(LayerClassifier(N_LAYERS, DIM, 3, "scalar-mix", "mean", dropout=0.1), lb)
    torch.manual_seed(0)
    words_only = test_accuracy(BagOfWordsClassifier(len(tfidf.vocab), 3), words, lr=bow_lr)
    torch.manual_seed(0)
    fusion = FusionClassifier(N_LAYERS, DIM, len(tfidf.vocab), 3, "scalar-mix", "mean", dropout=0.1)
    both = test_accuracy(fusion, FusionBatcher(lb, words), fusion.param_groups(cfg.lr, 1.0, bow_lr, 1e-5))
    assert layers_only <= 0.8 and words_only <= 0.8, (layers_only, words_only)
    assert both > 0.9, (both, layers_only, words_only)
    assert int(fusion.combine.layer_weights().argmax()) == 2  # the mix found the layer that carries bit a


def test_fusion_is_one_linear_layer_on_the_concatenation():
    torch.manual_seed(0)
    model = FusionClassifier(N_LAYERS, DIM, 5, 3, "equal", "max", dropout=0.0).eval()
    layers, mask, tfidf = torch.randn(4, N_LAYERS, 6, DIM), torch.ones(4, 6, dtype=torch.bool), torch.rand(4, 5)
    mask[1, 3:] = False
    h = model.encoder(model.combine(layers, mask), mask)  # (B, D)
    w = torch.cat([model.output.weight, model.bow_output.weight], dim=1)  # (C, D + V)
    expected = torch.cat([h, tfidf], dim=1) @ w.T + model.output.bias
    torch.testing.assert_close(model(layers, mask, tfidf), expected)


def test_fusion_param_groups_and_batcher():
    model = FusionClassifier(N_LAYERS, DIM, 5, 3, "equal", "mean")
    rest, bow = model.param_groups(0.02, 30.0, bow_lr=0.5, bow_weight_decay=0.1)
    assert bow["params"] == [model.bow_output.weight] and (bow["lr"], bow["weight_decay"]) == (0.5, 0.1)
    assert rest["lr"] == 0.02 and "weight_decay" not in rest  # no mix group: the equal mix is frozen
    frozen = {id(p) for p in model.combine.parameters()}  # the equal mix learns nothing
    assert not frozen & {id(p) for p in rest["params"]}
    assert {id(p) for p in rest["params"]} | {id(model.bow_output.weight)} == \
        {id(p) for p in model.parameters() if p.requires_grad}
    layers, tokens, _, *_ = two_bit_docs(6)
    batch = FusionBatcher(LayerBatcher(layers, CPU), DenseBatcher(np.eye(6, 4, dtype=np.float32), CPU))([4, 1])
    T = max(layers[4].shape[1], layers[1].shape[1])
    assert [tuple(t.shape) for t in batch] == [(2, N_LAYERS, T, DIM), (2, T), (2, 4)]
    assert batch[2][1].tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="TF-IDF vocabulary"):
        FusionClassifier(N_LAYERS, DIM, 0, 3)


def test_mode_elmo_bow_from_the_cli(tmp_path):
    import json

    from elmo_dist.cli import main
    from tests.unit.test_classify_cli import FAST, labelled_rows, write_layers, write_tsv
    rows = labelled_rows(60)
    out = tmp_path / "o"
    assert main(["classify", "--layers", str(write_layers(tmp_path / "l.hdf5", rows)), "--labels",
                 str(write_tsv(tmp_path / "l.tsv", rows)), "--out", str(out), "--tokenizer", "whitespace",
                 "--mode", "elmo+bow", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    # 12 test documents and a 6-epoch budget: the learning itself is tested above; here, above chance (1/3).
    assert list(results["summary"]) == ["elmo+bow"] and results["summary"]["elmo+bow"]["test_accuracy"] >= 0.5
    run = results["runs"][0]
    assert (run["combine"], run["encoder"], run["baseline"]) == ("scalar-mix", "mean + tf-idf, linear", False)
    assert abs(sum(run["layer_weights"]) - 1) < 1e-5 and results["dataset"]["bow_vocabulary"] > 0


def test_warm_start_gives_the_bag_of_words_logits():
    from elmo_dist.classify.model import BagOfWordsClassifier, FusionClassifier
    torch.manual_seed(0)
    bow = BagOfWordsClassifier(11, 3)
    fusion = FusionClassifier(3, 4, 11, 3, "scalar-mix", "ffpool", 5, 0.0)
    fusion.warm_start(bow)
    layers, mask, tfidf = torch.randn(2, 3, 6, 4), torch.ones(2, 6, dtype=torch.bool), torch.rand(2, 11)
    fusion.eval()
    assert torch.allclose(fusion(layers, mask, tfidf), bow(tfidf), atol=1e-6)  # ELMo enters at zero
    assert fusion.output.weight.abs().sum() == 0 and not torch.equal(fusion.bow_output.weight, torch.zeros(3, 11))


def test_warm_start_is_kept_unless_dev_accuracy_rises():
    """fit(keep_start=True): an epoch that only lowers the dev loss at the start's dev accuracy
    must not replace the start. Here the bag of words already gets every dev document right
    (nothing can beat it), and training on lowers its dev loss: the start's weights come back."""
    layers, tokens, labels, train, dev, test = two_bit_docs()
    words_of = ["on" if lab else "off" for lab in labels]  # a label the single word decides
    tokens = [t + [w] * 3 for t, w in zip(tokens, words_of)]
    labels = [int(lab > 0) for lab in labels]
    tfidf = TfIdf().fit([tokens[i] for i in train])
    words = DenseBatcher(tfidf.transform(tokens), CPU)
    torch.manual_seed(0)
    bow = BagOfWordsClassifier(len(tfidf.vocab), 2)
    fit(bow, words, labels, train, dev, FitConfig(30, 30, 10, 0.1), progress=False)
    start_pred, start_loss = predict(bow, words, dev, labels)
    assert (start_pred == np.array([labels[i] for i in dev])).all()
    start = {k: v.clone() for k, v in bow.state_dict().items()}
    result = fit(bow, words, labels, train, dev, FitConfig(5, 5, 10, 0.1), progress=False, keep_start=True)
    later = [r["dev_loss"] for r in result.history]
    assert min(later) < start_loss  # training did lower the dev loss at the same accuracy
    assert result.best_epoch == 0
    for k, v in bow.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0)
