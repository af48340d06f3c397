"""AllenNLP 2.10.1's own ELMo code (its ``_ElmoBiLm``, run from its wheel by
benchmarks/allennlp_reference.py) against elmo-dist, on the fixture and on weights written here.

This is the claim that a model trained here loads in AllenNLP's ``Elmo`` unchanged, checked with
AllenNLP's code rather than with a reading of it. The wheel cannot be installed beside this
project's torch, so it is read from a file: set ELMO_DIST_ALLENNLP_WHEEL to
allennlp-2.10.1-py3-none-any.whl (``pip download allennlp==2.10.1 --no-deps -d DIR``); .ci/run
does that. Without the variable the tests skip, saying so; with it set to a missing file, they fail.
"""
import os
from pathlib import Path

import pytest
import torch

from elmo_dist import BiLM, ModelConfig, batch_to_ids
from elmo_dist.export import Embedder

from . import OPTIONS, WEIGHTS

ATOL = 1e-5
WHEEL = os.environ.get("ELMO_DIST_ALLENNLP_WHEEL")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not WHEEL, reason="ELMO_DIST_ALLENNLP_WHEEL is not set (AllenNLP 2.10.1's wheel; "
                                                   "`pip download allennlp==2.10.1 --no-deps -d DIR`)")]

SENTENCES = [["The", "cat", "sat", "on", "the", "mat", "."], ["Ünïcode", "wörds", "too"], ["a"],
             ["A", "much", "longer", "sentence", ",", "with", "punctuation", ";", "and", "numbers", "12,345", "."]]


@pytest.fixture(scope="module")
def allennlp_elmo():
    from benchmarks.allennlp_reference import load
    assert Path(WHEEL).is_file(), f"ELMO_DIST_ALLENNLP_WHEEL={WHEEL}: no such file"
    return load(WHEEL)


def allennlp_layers(elmo, model, sentences) -> torch.Tensor:
    """AllenNLP's activations with the boundaries removed, as (B, L+1, T, 2P)."""
    with torch.no_grad():
        out = model(batch_to_ids(sentences))
        return torch.stack([elmo.remove_sentence_boundaries(a, out["mask"])[0] for a in out["activations"]], 1)


def assert_layers_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    diff = (got - want).abs()
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    assert float(diff.max()) <= ATOL, f"{what}: max |diff| {float(diff.max()):.3g} at (row, layer, t, unit) {where}"


def test_fixture_weights_stateful_batch_by_batch(allennlp_elmo, require_elmo_fixture):
    """Both load the fixture and carry state per row across five batches: every layer agrees."""
    theirs = allennlp_elmo._ElmoBiLm(str(OPTIONS), str(WEIGHTS)).eval()
    ours = BiLM.from_allennlp(OPTIONS, WEIGHTS)
    for i in range(5):
        batch = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(3)]
        with torch.no_grad():
            got = ours(batch_to_ids(batch)).layers
        assert_layers_close(got, allennlp_layers(allennlp_elmo, theirs, batch), f"batch {i}")


def test_weights_written_here_load_in_allennlp(allennlp_elmo, tmp_path):
    """A model with other sizes (3 highways, 3 LSTM layers, an odd filter bank, no clips on
    the cell) goes through to_allennlp; AllenNLP's code gives our layers, and the export path's
    Embedder gives them too, stateless."""
    torch.manual_seed(0)
    cfg = ModelConfig(lstm_dim=24, projection_dim=10, n_layers=3, char_embed_dim=6,
                      filters=[[1, 5], [2, 7], [4, 9], [6, 3]], n_highway=3, vocab_size=0, dropout=0.0,
                      cell_clip=None, proj_clip=0.4)
    model = BiLM(cfg, stateful=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the initialisation's symmetric values
    model.to_allennlp(tmp_path)
    theirs = allennlp_elmo._ElmoBiLm(str(tmp_path / "options.json"), str(tmp_path / "lm_weights.hdf5")).eval()
    with torch.no_grad():
        want = model(batch_to_ids(SENTENCES)).layers
    theirs._elmo_lstm.reset_states()
    assert_layers_close(want, allennlp_layers(allennlp_elmo, theirs, SENTENCES), "BiLM.forward")
    got, _ = Embedder(model).embed(SENTENCES)
    theirs._elmo_lstm.reset_states()
    assert_layers_close(got, allennlp_layers(allennlp_elmo, theirs, SENTENCES), "Embedder.embed")
