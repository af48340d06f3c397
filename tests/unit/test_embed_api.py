"""Sentence vectors, long lines in windows, ``elmo_dist.embed`` and Elmo's cached path, each
against ``BiLM.forward`` run here on whole sentences (the independent path)."""
import copy
import json
import pickle

import h5py
import numpy as np
import pytest
import torch

import elmo_dist
from elmo_dist import BiLM, Elmo, ModelConfig, batch_to_ids
from elmo_dist.cli import main
from elmo_dist.export import Embedder, export_sentences

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = [f"t{i % 9}" for i in range(41)]  # 41 tokens, words repeated: cache hits inside the line
LINES = ["the cat sat on the mat .", "", "a b", " ".join(LONG), "x", "the cat sat on the mat ."]


def make_bilm(skip=True, clip=3.0, stateful=False) -> BiLM:
    torch.manual_seed(0)
    cfg = ModelConfig(lstm_dim=20, projection_dim=6, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 5], [3, 3]],
                      n_highway=1, vocab_size=0, dropout=0.0, use_skip_connections=skip, cell_clip=clip,
                      proj_clip=clip)
    model = BiLM(cfg, stateful=stateful).eval()
    with torch.no_grad():  # large biases so that the clips bind and states differ from zero
        for layer in (*model.forward_lm.layers, *model.backward_lm.layers):
            layer.bias.normal_(0, 2)
    return model


def forward_layers(bilm, sentences) -> list:
    """BiLM.forward on the sentences as one batch: per sentence (L+1, n, 2P) float64."""
    with torch.no_grad():
        layers = bilm(batch_to_ids(sentences)).layers.double()
    return [layers[i, :, :len(s)].numpy() for i, s in enumerate(sentences)]


def select(ref: np.ndarray, mode: str) -> np.ndarray:
    return {"all": ref, "top": ref[-1], "average": ref.mean(0)}[mode]


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["all", "top", "average"])
def test_sentence_vectors_are_token_means_of_bilm_forward(tmp_path, input_file, mode):
    bilm = make_bilm()
    out = tmp_path / "v.hdf5"
    export_sentences(Embedder(bilm), input_file, out, mode=mode, sentence_vectors=True, max_tokens=10,
                     batch_size=2, progress=False)
    sentences = [line.split() for line in LINES if line.strip()]
    with torch.no_grad():  # the mean over unmasked tokens of a padded batch, written out here
        result = bilm(batch_to_ids(sentences))
    m = result.mask[:, None, :, None].double()  # (B, 1, T, 1)
    means = ((result.layers.double() * m).sum(2) / m.sum(2)).numpy()  # (B, L+1, 2P)
    with h5py.File(out, "r") as f:
        assert f.attrs["sentence_vectors"]
        assert f["1"].shape == ((3, 12) if mode == "all" else (12,)) and not f["1"][...].any()  # blank: zeros
        for i, key in enumerate(k for k, line in enumerate(LINES) if line.strip()):
            want = select(means[i], mode)
            got = f[str(key)][...]
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.allclose(got, want, atol=1e-5, rtol=0), (mode, key)  # the 41-token line went in windows


@pytest.mark.parametrize("skip,clip", [(True, 3.0), (False, None)], ids=["skip-clip", "noskip-noclip"])
@pytest.mark.parametrize("window", [1, 2, 7, 40])
def test_long_line_in_windows_equals_one_pass(tmp_path, input_file, window, skip, clip):
    """Windows of 1 slot (every window one step), 2, 7, and 40 (</S> alone in the last window)."""
    bilm = make_bilm(skip, clip)
    whole, windowed = tmp_path / "whole.hdf5", tmp_path / "windowed.hdf5"
    export_sentences(Embedder(bilm), input_file, whole, max_tokens=1000, progress=False)
    report = export_sentences(Embedder(bilm), input_file, windowed, max_tokens=window, progress=False)
    long_lines = sum(len(line.split()) > window for line in LINES)
    assert report.windowed_lines == long_lines and report.truncated_lines == 0
    with h5py.File(whole, "r") as a, h5py.File(windowed, "r") as b:
        for key, line in enumerate(LINES):
            want = forward_layers(bilm, [line.split()])[0] if line.strip() else None
            got = b[str(key)][...]
            assert np.allclose(a[str(key)][...], got, atol=1e-5, rtol=0), key
            if want is not None:
                assert got.shape == want.shape  # one dataset of the full length
                err = np.abs(got - want).max(axis=(1, 2))  # per layer
                assert (err < 1e-5).all(), (key, err)


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_windows_with_the_directions_in_two_threads(stateful):
    """2 torch threads: the two directions run at once, each writing its column half."""
    torch.set_num_threads(2)
    bilm = make_bilm(stateful=stateful)
    sentences = [LONG, LONG[:13], ["a", "b"]]
    want = forward_layers(make_bilm(stateful=stateful), sentences)  # the first batch: zero state either way
    embedder = Embedder(bilm, stateful=stateful)
    got = elmo_dist.embed(sentences, embedder, max_tokens=6, batch_size=3)
    vectors = elmo_dist.embed(sentences, Embedder(make_bilm()), max_tokens=6, sentence_vectors=True)
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.allclose(g, w, atol=1e-5, rtol=0), i
        assert np.allclose(vectors[i], w.mean(axis=1), atol=1e-5, rtol=0), i


def test_stateful_batches_with_a_long_row_carry_every_rows_state(tmp_path, input_file):
    """Stateful, a batch holding a long line runs in windows as a whole: each row's vectors and
    the state it hands to the next batch are those of BiLM.forward on the same batches."""
    sentences = [line.split() for line in LINES if line.strip()]
    reference = make_bilm(stateful=True)
    want = []
    for start in range(0, len(sentences), 2):
        want += forward_layers(reference, sentences[start:start + 2])  # stateful: carries row state
    out = tmp_path / "s.hdf5"
    embedder = Embedder(make_bilm(), stateful=True)
    report = export_sentences(embedder, input_file, out, batch_size=2, max_tokens=5, progress=False)
    assert report.windowed_lines == 3  # the two 7-token lines and the 41-token one
    with h5py.File(out, "r") as f:
        got = [f[str(k)][...] for k, line in enumerate(LINES) if line.strip()]
    for i, (g, w) in enumerate(zip(got, want)):
        assert np.allclose(g, w, atol=1e-5, rtol=0), i
    assert not np.allclose(got[0], got[-1], atol=1e-3)  # same sentence, other state: stateful indeed


def test_stateful_warm_up_runs_the_first_batches_first(tmp_path, input_file):
    sentences = [line.split() for line in LINES if line.strip()]
    reference = make_bilm(stateful=True)
    forward_layers(reference, sentences[:2])  # the warm-up batch, discarded
    want = forward_layers(reference, sentences[:2])
    out = tmp_path / "w.hdf5"
    export_sentences(Embedder(make_bilm(), stateful=True), input_file, out, batch_size=2, warm_up_batches=1,
                     progress=False)
    with h5py.File(out, "r") as f:
        assert np.allclose(f["0"][...], want[0], atol=1e-5) and np.allclose(f["2"][...], want[1], atol=1e-5)
    with pytest.raises(ValueError, match="stateful"):
        export_sentences(Embedder(make_bilm()), input_file, out, warm_up_batches=1, progress=False)


@pytest.mark.parametrize("output", ["all", "top", "average"])
@pytest.mark.parametrize("sentence_vectors", [False, True])
def test_embed_equals_bilm_forward(output, sentence_vectors):
    bilm = make_bilm()
    texts = [line for line in LINES if line.strip()]
    want = [select(r, output) for r in forward_layers(bilm, [t.split() for t in texts])]
    if sentence_vectors:
        want = np.stack([w.mean(axis=-2) for w in want])
    got = elmo_dist.embed(texts, bilm, output=output, sentence_vectors=sentence_vectors, batch_size=2, max_tokens=9)
    assert bilm.stateful is False and not bilm.training
    if sentence_vectors:
        assert isinstance(got, np.ndarray) and got.shape == want.shape
        assert np.allclose(got, want, atol=1e-5, rtol=0)
    else:
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and g.shape == w.shape and np.allclose(g, w, atol=1e-5, rtol=0)


def test_embed_inputs_models_and_empty_sentences(tmp_path):
    bilm = make_bilm(stateful=True)
    bilm.train()
    tokens = [["a", "b"], [], ["the", "cat"]]
    got = elmo_dist.embed(tokens, bilm)
    assert bilm.stateful and bilm.training  # the caller's flags are restored
    assert got[1].shape == (3, 0, 12)
    bilm.stateful = False
    bilm.eval()
    want = forward_layers(bilm, [["a", "b"], ["the", "cat"]])
    assert np.allclose(got[0], want[0], atol=1e-5) and np.allclose(got[2], want[1], atol=1e-5)
    one = elmo_dist.embed("the cat", bilm, output="top")  # one text: one array back
    assert one.shape == (2, 12) and np.allclose(one, want[1][-1], atol=1e-5)
    cut = elmo_dist.embed([LONG], bilm, max_tokens=5, long_lines="cut")[0]
    assert np.allclose(cut, forward_layers(bilm, [LONG[:5]])[0], atol=1e-5)
    bilm.to_allennlp(tmp_path / "m")
    files = dict(options=tmp_path / "m/options.json", weights=tmp_path / "m/lm_weights.hdf5")
    embedder = elmo_dist.load_embedder(**files, device="cpu")
    assert np.allclose(elmo_dist.embed(["the cat"], embedder)[0], want[1], atol=1e-5)
    assert np.allclose(elmo_dist.embed(["the cat"], **files, device="cpu")[0], want[1], atol=1e-5)
    assert elmo_dist.embed([], embedder, sentence_vectors=True).shape == (0, 3, 12)
    assert elmo_dist.embed([], embedder) == []
    with pytest.raises(ValueError, match="not both"):
        elmo_dist.embed(["a"], embedder, **files)
    with pytest.raises(ValueError, match="mode"):
        elmo_dist.embed(["a"], embedder, output="mean")
    with pytest.raises(ValueError, match=r"sentences\[0\]"):
        elmo_dist.embed([3], embedder)


def test_cli_sentence_vectors_and_errors(tmp_path, input_file, capsys):
    bilm = make_bilm()
    bilm.to_allennlp(tmp_path / "m")
    model = ["--options", str(tmp_path / "m/options.json"), "--weights", str(tmp_path / "m/lm_weights.hdf5"),
             "--threads", "1", "--no-progress"]
    out, report = tmp_path / "o.hdf5", tmp_path / "r.json"
    assert main(["export", str(input_file), str(out), "--top", "--sentence-vectors", "--max-tokens", "8",
                 "--report", str(report), *model]) == 0
    assert "1 lines over max_tokens embedded whole in windows" in capsys.readouterr().out
    assert json.loads(report.read_text())["windowed_lines"] == 1
    with h5py.File(out, "r") as f:
        want = forward_layers(bilm, [LONG])[0][-1].mean(0)
        assert f["3"].shape == (12,) and np.allclose(f["3"][...], want, atol=1e-5)
    assert main(["export", str(input_file), str(out), "--long-lines", "cut", "--max-tokens", "8", *model]) == 0
    assert "1 lines over max_tokens truncated" in capsys.readouterr().out
    assert main(["export", str(input_file), str(tmp_path / "x.hdf5"), "--warm-up-batches", "2", *model]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stateful" in err, err
    assert main(["export", "--vocab-embeddings", str(input_file), str(tmp_path / "x.hdf5"), "--sentence-vectors",
                 *model]) == 2
    assert "--sentence-vectors" in capsys.readouterr().err
    assert not (tmp_path / "x.hdf5").exists()


def test_frozen_elmo_cached_path_equals_bilm_forward_across_batches_and_weight_changes():
    bilm = make_bilm()
    elmo = Elmo(bilm, 1, dropout=0.0)
    plain = Elmo(make_bilm(), 1, dropout=0.0, token_cache_mb=None)
    batches = [[["the", "cat", "sat"], ["a"]], [["a", "cat"], [], ["sat", "the", "cat", "a"]]]
    for _ in range(2):  # the second epoch: every token from the cache
        for batch in batches:
            chars = batch_to_ids(batch)
            got, want = elmo(chars), plain(chars)
            assert torch.equal(got.mask, want.mask)
            assert torch.allclose(got.representations[0], want.representations[0], atol=1e-6, rtol=0)
    cache = elmo._frozen_layers._embedder.cache
    assert cache.misses == 4 and cache.hits == 2 * 10 - 4  # 4 distinct words, each through the CNN once
    with torch.no_grad():  # new weights: the cached path rebuilds and follows them
        for p in bilm.parameters():
            p.mul_(1.5)
    chars = batch_to_ids(batches[0])
    with torch.no_grad():
        ref = bilm(chars).layers.mean(1) * bilm(chars).mask[..., None]
    assert torch.allclose(elmo(chars).representations[0], ref, atol=1e-5)
    right_aligned = torch.zeros_like(chars)
    right_aligned[1, -1] = chars[1, 0]  # a token after padding: not batch_to_ids' layout
    assert not elmo._frozen_layers.applies(right_aligned, right_aligned.gt(0).any(-1))
    with torch.no_grad():
        ref = bilm(right_aligned).layers.mean(1) * bilm(right_aligned).mask[..., None]
    assert torch.allclose(elmo(right_aligned).representations[0], ref, atol=1e-5)  # BiLM.forward then
    clone = copy.deepcopy(elmo)
    pickle.loads(pickle.dumps(elmo))
    assert torch.allclose(clone(chars).representations[0], elmo(chars).representations[0], atol=1e-6)
