"""scikit-learn: the bow-sklearn baseline (C chosen on dev only, deterministic) and our metrics
cross-checked against sklearn.metrics."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from elmo_dist.classify.report import classification_report
from elmo_dist.classify.sklearn_bow import C_GRID, fit_sklearn_bow, lower_tokens
from tests.unit.test_classify_cli import CLASSES, labelled_rows


def rows_as_tokens(n=150):
    rows = labelled_rows(n)
    tokens = [text.split() for text, _ in rows]
    tokens = [[t.upper() if k % 2 else t for t in toks] for k, toks in enumerate(tokens)]  # case must not matter
    labels = [CLASSES.index(y) for _, y in rows]
    a, b = 3 * n // 5, 4 * n // 5
    return tokens, labels, {"train": list(range(a)), "dev": list(range(a, b)), "test": list(range(b, n))}


def test_bow_sklearn_learns_chooses_c_on_dev_and_is_deterministic():
    tokens, labels, split = rows_as_tokens()
    r = fit_sklearn_bow(tokens, labels, split)
    y_test = np.array([labels[i] for i in split["test"]])
    assert (r.test_pred == y_test).mean() >= 0.6  # the class word is in 2 rows of 3; chance is 1/3
    assert list(r.dev_accuracy_by_C) == [str(float(c)) for c in C_GRID]
    best = max(r.dev_accuracy_by_C.values())
    assert r.C == next(float(c) for c in C_GRID if r.dev_accuracy_by_C[str(float(c))] == best)  # ties: smaller C
    y_dev = np.array([labels[i] for i in split["dev"]])
    assert r.dev_accuracy_by_C[str(r.C)] == pytest.approx((r.dev_pred == y_dev).mean())
    assert r.features == len({t.lower() for i in split["train"] for t in tokens[i]})  # lower-cased, train only
    again = fit_sklearn_bow(tokens, labels, split)
    assert again.C == r.C and np.array_equal(again.test_pred, r.test_pred) and again.test_loss == r.test_loss
    shuffled = list(labels)
    for i, j in zip(split["test"], np.random.default_rng(0).permutation(split["test"])):
        shuffled[i] = labels[j]
    blind = fit_sklearn_bow(tokens, shuffled, split)  # other test labels: the same choice, the same predictions
    assert blind.dev_accuracy_by_C == r.dev_accuracy_by_C and np.array_equal(blind.test_pred, r.test_pred)
    assert lower_tokens(["A", "b"]) == ["a", "b"]


def test_bow_sklearn_bad_input():
    tokens, labels, split = rows_as_tokens(30)
    with pytest.raises(ValueError, match="C grid is empty"):
        fit_sklearn_bow(tokens, labels, split, grid=())
    with pytest.raises(ValueError, match="fewer than two classes"):
        fit_sklearn_bow(tokens, [0] * len(labels), split)


@pytest.mark.parametrize("seed", range(5))
def test_report_matches_sklearn_metrics(seed):
    """Random labels over 5 classes: class 3 is never predicted, class 4 never true (but predicted).
    sklearn scores a class absent from y_true only when told labels=range(C), as we always do."""
    rng = np.random.default_rng(seed)
    C, n = 5, 60
    y_true = rng.choice([0, 1, 2, 3], size=n)
    y_pred = rng.choice([0, 1, 2, 4], size=n)
    names = [f"c{k}" for k in range(C)]
    ours = classification_report(y_true.tolist(), y_pred.tolist(), names)
    labels = list(range(C))
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert ours["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for k, name in enumerate(names):
        got = ours["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[k], r[k], f[k])), name
        assert got["support"] == s[k]
    assert ours["confusion"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert ours["per_class"]["c3"]["precision"] == 0 and ours["per_class"]["c4"]["support"] == 0
    # Without labels=, sklearn's macro mean would skip a class seen nowhere: not what we report.
    unseen = classification_report([0, 1, 1], [0, 1, 0], ["a", "b", "never"])
    assert unseen["macro_f1"] == pytest.approx(f1_score([0, 1, 1], [0, 1, 0], labels=[0, 1, 2], average="macro",
                                                        zero_division=0))
    assert unseen["macro_f1"] != pytest.approx(f1_score([0, 1, 1], [0, 1, 0], average="macro", zero_division=0))
