"""`elmo-dist classify` end to end on tiny inputs: HDF5 layers, on-the-fly export with its cache, errors."""
import json

import h5py
import numpy as np
import pytest
import torch

from elmo_dist import BiLM, ModelConfig, batch_to_ids
from elmo_dist.cli import main

FAST = ["--encoder", "mean", "--hidden", "8", "--epochs", "6", "--patience", "2", "--batch-size", "16",
        "--lr", "1e-2", "--wandb-mode", "disabled", "--no-progress", "--threads", "1"]
CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def labelled_rows(n, seed=0):
    """(text, label) rows: random filler words and, in 2 rows of 3, a word naming the class."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % 3]
        words = [f"w{k}" for k in rng.integers(0, 40, size=int(rng.integers(4, 9)))]
        if i % 3 != 2 or i % 2:
            words.insert(int(rng.integers(0, len(words))), label)
        rows.append((" ".join(words) + f" n{i}", label))
    return rows


def write_tsv(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


def write_layers(path, rows, informative=2, dim=6, shape_of=None):
    """An `export --all`-style file whose layer `informative` carries the label."""
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, dim)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for i, (text, label) in enumerate(rows):
            x = rng.normal(size=(3, len(text.split()), dim)).astype(np.float32)
            x[informative] += means[CLASSES.index(label)]
            f.create_dataset(str(i), data=x if shape_of is None else x[shape_of])
        index = f.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())
        index[0] = json.dumps({t: str(i) for i, (t, _) in enumerate(rows)})
    return path


def test_classify_from_hdf5_layers_all_modes_and_baselines(tmp_path, capsys):
    rows = labelled_rows(150)
    labels, layers, out = write_tsv(tmp_path / "l.tsv", rows), write_layers(tmp_path / "l.hdf5", rows), tmp_path / "o"
    code = main(["classify", "--layers", str(layers), "--labels", str(labels), "--out", str(out),
                 "--tokenizer", "whitespace", "--baselines", *FAST])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    # --layers: no biLM configuration to re-initialise, so no random-init control (said in one line)
    assert list(summary) == ["scalar-mix", "equal", "learned", "layer0", "bow", "bow-sklearn", "elmo+bow", "probe"]
    assert "pretraining_gain" not in results and "random-init control skipped: --layers" in printed
    assert results["dataset"]["random_init"]["skipped"]
    assert summary["bow-sklearn"]["seeds"] == 1 and summary["bow-sklearn"]["deterministic"]
    for name in ("scalar-mix", "equal", "learned"):
        assert summary[name]["test_accuracy"] >= 0.8, (name, summary[name])
        assert abs(sum(summary[name]["layer_weights"]) - 1) < 1e-5
    assert summary["layer0"]["test_accuracy"] < 0.6  # layer 0 holds no label here
    run = results["runs"][0]
    assert set(run["test"]) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    assert sum(map(sum, run["test"]["confusion"])) == results["dataset"]["split_sizes"]["test"] == 30
    assert (out / run["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    assert set(json.loads((out / "layer_weights.json").read_text())) == {"scalar-mix", "equal", "learned", "layer0",
                                                                         "elmo+bow"}
    split = json.loads((out / "split.json").read_text())
    assert split["counts"]["test"] == {c: 10 for c in CLASSES} and len(split["ids"]["train"]) == 105
    assert (out / "metrics.jsonl").read_text().count('"kind": "epoch"') >= 5
    assert results["dataset"]["layers"]["rows_differing"] == 0
    last = printed.strip().splitlines()[-1]
    assert last.startswith("classifier test accuracy (l.tsv, 30 test documents, scalar-mix): ")


def test_hdf5_layer_errors_are_one_line(tmp_path, capsys):
    rows = labelled_rows(30)
    labels = write_tsv(tmp_path / "l.tsv", rows)
    write_layers(tmp_path / "short.hdf5", rows[:20])
    write_layers(tmp_path / "top.hdf5", rows, shape_of=-1)  # (T, D): an --top export
    for name, needle in (("short.hdf5", "20 line datasets, but the labels have 30 rows"), ("top.hdf5", "--all"),
                         ("absent.hdf5", "not found")):
        code = main(["classify", "--layers", str(tmp_path / name), "--labels", str(labels), "--out",
                     str(tmp_path / "o"), *FAST])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert main(["classify", "--labels", str(labels), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "no layers: give --run-dir" in capsys.readouterr().err


def test_on_the_fly_export_is_cached_and_matches_the_bilm(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(lstm_dim=16, projection_dim=4, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 4]],
                      n_highway=1, vocab_size=0, dropout=0.0)
    bilm = BiLM(cfg, stateful=False).eval()
    bilm.to_allennlp(tmp_path / "m")
    rows = labelled_rows(45)
    labels, out = write_tsv(tmp_path / "l.tsv", rows), tmp_path / "o"
    argv = ["classify", "--options", str(tmp_path / "m/options.json"), "--weights", str(tmp_path / "m/lm_weights.hdf5"),
            "--labels", str(labels), "--out", str(out), "--mode", "equal", "--max-tokens", "6", *FAST]
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())
    assert first["dataset"]["layers"]["cache_hit"] is False
    cache = sorted((out / "cache").glob("layers-*.hdf5"))
    assert len(cache) == 1
    tokens = rows[0][0].split()[:6]
    with h5py.File(cache[0], "r") as f, torch.no_grad():
        assert np.allclose(f["0"][...], bilm(batch_to_ids([tokens])).layers[0].numpy(), atol=1e-5)

    def no_model(*a, **k):
        raise ValueError("the cached export should have been used")  # a user-error kind: exit 2, one line
    monkeypatch.setattr("elmo_dist.classify.layers.load_bilm", no_model)
    assert main(argv) == 0
    second = json.loads((out / "results.json").read_text())
    assert second["dataset"]["layers"]["cache_hit"] is True
    assert second["runs"][0]["test"] == first["runs"][0]["test"]  # same layers, same seed: same figures
    assert main([*argv[:-len(FAST)], "--max-tokens", "5", *FAST]) == 2  # other tokens: a new export, patched out
    assert "cached export should have been used" in capsys.readouterr().err
