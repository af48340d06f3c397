"""The tiny bilm-tf model of shared/fixtures/allennlp_elmo, reproduced batch by batch.

Fixture (its README): a freshly loaded stateful model ran 10 batches in order, batch i holding
rows sentences[0][i], sentences[1][i], sentences[2][i]; lm_embeddings_k.hdf5 dataset str(i) is
the top layer of sentences[k][i] as (2, T, 16): forward half, backward half.
"""
import json

import numpy as np
import pytest
import torch

from elmo_dist import BiLM, batch_to_ids

from . import FIXTURE_DIR, OPTIONS, WEIGHTS

pytestmark = pytest.mark.usefixtures("require_elmo_fixture", "one_thread")

ATOL = 1e-5
P = 16  # the fixture's projection_dim
N_LAYERS = 2


@pytest.fixture(scope="module")
def sentences():
    raw = json.loads((FIXTURE_DIR / "sentences.json").read_text(encoding="utf-8"))
    return [[s.split() for s in row] for row in raw]


@pytest.fixture(scope="module")
def expected():
    import h5py
    out = []
    for k in range(3):
        with h5py.File(FIXTURE_DIR / f"lm_embeddings_{k}.hdf5", "r") as f:
            out.append([f[str(i)][...] for i in range(10)])
    return out


def _top_as_fixture(layers: torch.Tensor, row: int, length: int) -> np.ndarray:
    """(B, L+1, T, 2P) -> the fixture's (2, T, P) layout for one row: forward, backward halves."""
    top = layers[row, -1, :length].numpy()  # (T, 2P)
    return np.stack([top[:, :P], top[:, P:]])


def _describe(got: np.ndarray, want: np.ndarray) -> str:
    diff = np.abs(got - want)
    bad = np.argwhere(diff > ATOL)
    return (f"{len(bad)} of {diff.size} elements differ by > {ATOL} (max {diff.max():.3g} at "
            f"{np.unravel_index(diff.argmax(), diff.shape)}); nan in got: {np.isnan(got).any()}")


def _run(model: BiLM, sentences, reset_each_batch: bool = False):
    """Ten batches in fixture order; yields (i, batch sentences, output)."""
    with torch.no_grad():
        for i in range(10):
            if reset_each_batch:
                model.reset_state()
            batch = [sentences[k][i] for k in range(3)]
            yield i, batch, model(batch_to_ids(batch))


def test_stateful_top_layer_matches_all_rows_all_batches(sentences, expected):
    model = BiLM.from_allennlp(OPTIONS, WEIGHTS)
    assert model.stateful and not model.training
    for i, batch, out in _run(model, sentences):
        T = max(len(s) for s in batch)
        assert out.layers.shape == (3, N_LAYERS + 1, T, 2 * P)
        assert out.mask.shape == (3, T)
        assert out.mask.sum(1).tolist() == [len(s) for s in batch]
        # Layer 0 is the token embedding twice; every layer is zero at padding.
        assert torch.equal(out.layers[:, 0, :, :P], out.layers[:, 0, :, P:])
        assert not out.layers[~out.mask.unsqueeze(1).expand(-1, N_LAYERS + 1, -1)].any()
        for k in range(3):
            want = expected[k][i]
            got = _top_as_fixture(out.layers, k, len(batch[k]))
            assert got.shape == want.shape, (i, k)
            assert np.allclose(got, want, atol=ATOL, rtol=0), f"batch {i} row {k}: {_describe(got, want)}"


def test_resetting_state_between_batches_does_not_match(sentences, expected):
    """The state carry is real: without it, every batch after the first moves far off."""
    model = BiLM.from_allennlp(OPTIONS, WEIGHTS)
    for i, batch, out in _run(model, sentences, reset_each_batch=True):
        for k in range(3):
            diff = np.abs(_top_as_fixture(out.layers, k, len(batch[k])) - expected[k][i]).max()
            if i == 0:
                assert diff <= ATOL  # a fresh state is what the fixture started from
            else:
                assert diff > 100 * ATOL, f"batch {i} row {k} matched without the carried state"


def test_stateless_mode_same_sentence_same_vectors(sentences):
    model = BiLM.from_allennlp(OPTIONS, WEIGHTS, stateful=False)
    probe = sentences[1][3]
    with torch.no_grad():
        alone = model(batch_to_ids([probe])).layers[0]
        for i in range(5):  # unrelated batch history, then the probe among other neighbours
            model(batch_to_ids([sentences[k][i] for k in range(3)]))
        among = model(batch_to_ids([sentences[0][7], probe, sentences[2][9]])).layers[1, :, :len(probe)]
    assert model.state is None
    assert torch.allclose(alone, among, atol=1e-6, rtol=0)


def test_stateless_equals_the_fixture_on_its_first_batch(sentences, expected):
    model = BiLM.from_allennlp(OPTIONS, WEIGHTS, stateful=False)
    with torch.no_grad():
        out = model(batch_to_ids([sentences[k][0] for k in range(3)]))
    for k in range(3):
        assert np.allclose(_top_as_fixture(out.layers, k, len(sentences[k][0])), expected[k][0], atol=ATOL, rtol=0)


def test_stateful_export_file_matches_fixture(tmp_path, sentences, expected):
    """`elmo-dist export --stateful --batch-size 3` on the fixture's sentences in batch order."""
    import h5py

    from elmo_dist.cli import main
    lines = [" ".join(sentences[k][i]) for i in range(10) for k in range(3)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    code = main(["export", str(src), str(out), "--top", "--stateful", "--batch-size", "3", "--threads", "1",
                 "--options", str(OPTIONS), "--weights", str(WEIGHTS), "--no-progress"])
    assert code == 0
    with h5py.File(out, "r") as f:
        for i in range(10):
            for k in range(3):
                top = f[str(3 * i + k)][...]  # (T, 2P)
                got = np.stack([top[:, :P], top[:, P:]])
                assert np.allclose(got, expected[k][i], atol=ATOL, rtol=0), (i, k)
