"""Sentence and token embedding export: values, the HDF5 convention, blank/long lines, atomicity."""
import json

import h5py
import numpy as np
import pytest
import torch

from elmo_dist import BiLM, ModelConfig, batch_to_ids
from elmo_dist.cli import main
from elmo_dist.export import Embedder, batches_by_length, export_sentences, export_token_embeddings

LINES = ["the cat sat on the mat .", "", "a b", "   ", "the cat sat on the mat .",
         " ".join(f"w{i}" for i in range(12)), "Émile écrit ."]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bilm():
    torch.manual_seed(0)
    cfg = ModelConfig(lstm_dim=20, projection_dim=6, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 5], [3, 3]],
                      n_highway=1, vocab_size=0, dropout=0.0)
    model = BiLM(cfg, stateful=False).eval()
    with torch.no_grad():
        for layer in (*model.forward_lm.layers, *model.backward_lm.layers):
            layer.bias.normal_()
    return model


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def alone(bilm, tokens):
    """All layers of one sentence embedded on its own: (L+1, T, 2P)."""
    with torch.no_grad():
        return bilm(batch_to_ids([tokens])).layers[0].numpy()


def test_plain_recurrence_fallback_equals_bilm_forward(bilm):
    """Without TorchScript the plain-Python recurrence runs: it must give the same vectors."""
    from elmo_dist.export import packed_lstm
    sents = [line.split() for line in LINES if line.strip()]
    with torch.no_grad():
        want = bilm(batch_to_ids(sents)).layers
    embedder = Embedder(bilm)
    assert embedder.packed.recurrence is not packed_lstm._recurrence  # compiled where TorchScript exists
    embedder.packed.recurrence = packed_lstm._recurrence
    assert torch.allclose(embedder.embed(sents)[0], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("threads", [1, 2], ids=["serial", "two-threads"])
def test_embedder_one_and_two_word_sentences(bilm, threads):
    """A one-word sentence is all first step (nothing left to run): alone, mixed, and repeated."""
    torch.set_num_threads(threads)
    embedder = Embedder(bilm)
    for sents in ([["solo"]], [["solo"], ["a", "b"]], [["x"], ["y"], ["x"]], [["a", "b"], ["b", "a"], ["c"]]):
        with torch.no_grad():
            want = bilm(batch_to_ids(sents)).layers
        got, _ = embedder.embed(sents)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), sents


@pytest.mark.parametrize("threads", [1, 2], ids=["serial", "two-threads"])
def test_embedder_equals_bilm_forward(bilm, threads):
    sents = [line.split() for line in LINES if line.strip()]
    with torch.no_grad():
        want = bilm(batch_to_ids(sents)).layers
    torch.set_num_threads(threads)  # 2: the directions (and the CNN) run in two threads
    embedder = Embedder(bilm, cache_mb=0.0075)  # 7 words: the cache empties and refills
    assert embedder.cache.max_words == 7
    for _ in range(2):
        got, lengths = embedder.embed(sents)
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    for s in sents:  # one at a time: every batch shape, the same vectors
        assert torch.allclose(embedder.embed([s])[0][0], want[sents.index(s), :, :len(s)], atol=1e-6, rtol=0)
    assert lengths.tolist() == [len(s) for s in sents]


@pytest.mark.parametrize("long_lines", ["window", "cut"])
@pytest.mark.parametrize("mode", ["all", "top", "average"])
def test_export_modes_values_and_convention(tmp_path, bilm, input_file, mode, long_lines):
    out = tmp_path / "out.hdf5"
    report = export_sentences(Embedder(bilm), input_file, out, mode=mode, batch_size=2, max_tokens=10,
                              progress=False, long_lines=long_lines)
    assert (report.lines, report.sentences, report.blank_lines) == (7, 5, 2)
    cut = long_lines == "cut"
    assert (report.windowed_lines, report.truncated_lines, report.tokens_dropped) == ((0, 1, 2) if cut else (1, 0, 0))
    with h5py.File(out, "r") as f:
        assert set(f) == {str(i) for i in range(7)} | {"sentence_to_index"}
        index = json.loads(f["sentence_to_index"][0])
        # Repeated sentence -> its last line; blank lines are not in the map.
        assert index == {"the cat sat on the mat .": "4", "a b": "2", LINES[5]: "5", "Émile écrit .": "6"}
        for i, line in enumerate(LINES):
            tokens = line.split()[:10] if cut else line.split()  # the 12-token line: cut, or whole
            data = f[str(i)][...]
            if not tokens:
                assert data.shape == ((3, 0, 12) if mode == "all" else (0, 12))
                continue
            ref = alone(bilm, tokens)  # (3, T, 12)
            want = {"all": ref, "top": ref[-1], "average": ref.mean(0)}[mode]
            assert data.dtype == np.float32 and data.shape == want.shape
            assert np.allclose(data, want, atol=1e-5), (mode, i)
        # Stateless: the repeated sentence gets the same vectors on lines 0 and 4.
        assert np.allclose(f["0"][...], f["4"][...], atol=1e-6)


def test_export_is_atomic(tmp_path, bilm, input_file, monkeypatch):
    out = tmp_path / "out.hdf5"
    embedder = Embedder(bilm)

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(embedder, "embed", fail)
    with pytest.raises(RuntimeError, match="boom"):
        export_sentences(embedder, input_file, out, progress=False)
    assert list(tmp_path.iterdir()) == [input_file]  # no output, no temporary file left


def test_batches_by_length():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    batches = batches_by_length(lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) <= 3 for b in batches)
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    capped = batches_by_length(lengths, batch_size=10, max_batch_tokens=18)
    assert all(len(b) * max(lengths[i] for i in b) <= 18 or len(b) == 1 for b in capped)


def test_vocab_embeddings_are_the_token_layer(tmp_path, bilm):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<S>\n</S>\ncat\n\nsat\n  mat  \n", encoding="utf-8")
    out = tmp_path / "tokens.hdf5"
    counts = export_token_embeddings(bilm, vocab, out)
    assert counts == {"words": 5, "blank_lines": 1, "dim": 6}
    with h5py.File(out, "r") as f:
        emb = f["embedding"][...]
        words = [w.decode() if isinstance(w, bytes) else w for w in f["words"][...]]
    assert words == ["<S>", "</S>", "cat", "sat", "mat"] and emb.shape == (5, 6)
    layer0 = alone(bilm, ["cat", "sat", "mat"])[0]  # (T, 12): the token embedding, twice
    assert np.allclose(emb[2:], layer0[:, :6], atol=1e-6)
    assert np.allclose(emb[2:], layer0[:, 6:], atol=1e-6)


def test_cli_export_from_allennlp_files(tmp_path, bilm, input_file, capsys):
    bilm.to_allennlp(tmp_path / "m")
    out, report = tmp_path / "o.hdf5", tmp_path / "report.json"
    code = main(["export", str(input_file), str(out), "--average", "--options", str(tmp_path / "m/options.json"),
                 "--weights", str(tmp_path / "m/lm_weights.hdf5"), "--max-tokens", "10", "--threads", "1",
                 "--no-progress", "--report", str(report)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 blank lines" in printed and "1 lines over max_tokens embedded whole in windows" in printed
    assert json.loads(report.read_text())["tokens"] == 2 * 7 + 2 + 12 + 3
    with h5py.File(out, "r") as f:
        assert np.allclose(f["6"][...], alone(bilm, LINES[6].split()).mean(0), atol=1e-5)
    code = main(["export", "--vocab-embeddings", str(input_file), str(tmp_path / "v.hdf5"), "--threads", "1",
                 "--options", str(tmp_path / "m/options.json"), "--weights", str(tmp_path / "m/lm_weights.hdf5")])
    assert code == 0


@pytest.mark.parametrize("argv,needle", [
    (["in.txt", "o.hdf5"], "no model"),
    (["in.txt", "o.hdf5", "--run-dir", "r", "--options", "a", "--weights", "b"], "not both"),
    (["o.hdf5", "--options", "m/options.json", "--weights", "m/lm_weights.hdf5"], "INPUT OUTPUT"),
    (["absent.txt", "o.hdf5", "--options", "m/options.json", "--weights", "m/lm_weights.hdf5"], "input file not found"),
    (["in.txt", "o.hdf5", "--options", "m/options.json", "--weights", "m/absent.hdf5"], "absent.hdf5"),
    (["in.txt", "o.hdf5", "--run-dir", "norun"], "norun"),
])
def test_cli_export_errors_are_one_line(tmp_path, bilm, input_file, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    bilm.to_allennlp(tmp_path / "m")
    assert main(["export", *argv, "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o.hdf5").exists()


def test_cnn_over_new_words_split_in_two_threads(bilm):
    words = [f"w{i}x" for i in range(100)]
    embedder = Embedder(bilm)
    serial = embedder.cache.encode(words)
    torch.set_num_threads(2)
    assert torch.allclose(embedder.cache.encode(words, parallel=True), serial, atol=1e-6, rtol=0)


@pytest.mark.parametrize("threads", [1, 2], ids=["serial", "two-threads"])
def test_prefetch_caches_frequent_words_first_within_the_bound(bilm, threads):
    """Prefetched rows (CNN output, first-layer projections, first-step states, computed in
    blocks, in two threads with 2 threads) give the vectors BiLM.forward gives."""
    torch.set_num_threads(threads)
    sents = [[f"v{i}", f"v{i + 1}", "common", f"v{i + 2}"] for i in range(0, 120, 3)]  # 121 distinct words
    per_word = 4 * (6 + 8 * 20 + 2 * 2 * (6 + 20))
    embedder = Embedder(bilm, cache_mb=80.5 * per_word / 2 ** 20)
    assert embedder.cache.max_words == 80
    embedder.cache.encode_batch = 32  # blocks of 64 words: one in two threads, one serial
    assert embedder.prefetch(sents) == 80
    assert len(embedder.cache) == 80 and embedder.cache.misses == 80
    assert "common" in embedder.cache._index  # the most frequent word is among those kept
    assert embedder.prefetch(sents) == 0  # full: nothing more, and nothing emptied
    with torch.no_grad():
        want = bilm(batch_to_ids(sents)).layers
    assert torch.allclose(embedder.embed(sents[:20])[0], want[:20, :, :4], atol=1e-6, rtol=0)
    hits = embedder.cache.hits
    assert hits == 80 and embedder.cache.misses == 80  # sents[:20] use v0..v59 and "common": all prefetched
    assert torch.allclose(embedder.embed(sents)[0], want, atol=1e-6, rtol=0)  # overflows: empties and refills
