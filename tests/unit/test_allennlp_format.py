"""bilm-tf / AllenNLP format: import, export, exact round trips, other options, clear errors."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from elmo_dist import BiLM, ModelConfig, batch_to_ids
from elmo_dist.model.allennlp_format import (
    ELMoFormatError,
    config_from_options,
    load_weights,
    options_from_config,
    read_options,
    weight_table,
)
from tests.golden import OPTIONS, WEIGHTS

needs_fixture = pytest.mark.usefixtures("require_elmo_fixture")
SENTENCES = [["The", "cat", "sat", "."], ["Émile", "a", "longwordlongwordlongwordlongwordlongwordlongwordxyz"],
             ["<S>", "and", "</S>", "too", "many", "tokens", "here"]]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**changes) -> ModelConfig:
    base = dict(lstm_dim=24, projection_dim=8, n_layers=2, char_embed_dim=4,
                filters=[[1, 4], [2, 6], [3, 5]], n_highway=1, vocab_size=0, dropout=0.0)
    return ModelConfig(**{**base, **changes})


def randomised(model: BiLM, seed: int = 0) -> BiLM:
    """Every parameter random (the LSTM bias too, which starts at zero), padding row zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.encoder.char_embed.weight[0].zero_()
    return model.eval()


def embed(model: BiLM) -> torch.Tensor:
    """All layers of SENTENCES from a fresh state."""
    model.reset_state()
    with torch.no_grad():
        return model(batch_to_ids(SENTENCES)).layers


def datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    return out


# ------------------------------------------------------------------------------ round trips
@needs_fixture
def test_fixture_import_export_is_byte_exact(tmp_path):
    model = BiLM.from_allennlp(OPTIONS, WEIGHTS)
    paths = model.to_allennlp(tmp_path / "out")
    assert set(paths) == {"options", "weights"}  # no softmax in the fixture, none written
    original, written = datasets(WEIGHTS), datasets(paths["weights"])
    assert set(original) == set(written)
    for name in original:
        assert written[name].dtype == np.float32
        assert np.array_equal(original[name], written[name]), name
    # The options describe the same model; import -> export -> import gives the same outputs.
    assert read_options(paths["options"]) == read_options(OPTIONS)
    again = BiLM.from_allennlp(paths["options"], paths["weights"])
    assert torch.equal(embed(model), embed(again))


@pytest.mark.parametrize("changes", [
    dict(use_skip_connections=False),
    dict(n_layers=1, n_highway=0),
    dict(n_layers=3, n_highway=3, filters=[[2, 3], [4, 7], [7, 2]], activation="tanh"),
    dict(cell_clip=None, proj_clip=None, char_embed_dim=5, lstm_dim=13, projection_dim=7),
], ids=["no-skip", "1-layer-0-highway", "3-layers-3-highways-tanh", "no-clips-odd-sizes"])
def test_other_options_round_trip(tmp_path, changes):
    model = randomised(BiLM(small_config(**changes)))
    model.to_allennlp(tmp_path)
    options = json.loads((tmp_path / "options.json").read_text())
    assert config_from_options(options) == model.config
    again = BiLM.from_allennlp(tmp_path / "options.json", tmp_path / "lm_weights.hdf5")
    assert again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(embed(model), embed(again))


def test_skip_connection_option_is_honoured(tmp_path):
    """The same weights read with use_skip_connections flipped give different upper layers."""
    model = randomised(BiLM(small_config(use_skip_connections=True)))
    model.to_allennlp(tmp_path)
    options = json.loads((tmp_path / "options.json").read_text())
    options["lstm"]["use_skip_connections"] = False
    (tmp_path / "noskip.json").write_text(json.dumps(options))
    noskip = BiLM.from_allennlp(tmp_path / "noskip.json", tmp_path / "lm_weights.hdf5")
    a, b = embed(model), embed(noskip)
    assert torch.equal(a[:, :2], b[:, :2])  # token layer and first LSTM layer: no skip there anyway
    assert not torch.allclose(a[:, 2], b[:, 2])


def test_model_trained_here_round_trips_with_its_softmax(tmp_path):
    torch.manual_seed(0)
    model = BiLM(small_config(vocab_size=11, dropout=0.1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    chars = batch_to_ids([["a", "b", "c", "d"], ["e", "f", "g", "h"]])
    targets = torch.randint(0, 11, (2, 4))
    for _ in range(3):
        loss, _ = model.lm_loss(chars, targets, targets.flip(1))
        opt.zero_grad()
        loss.loss.backward()
        opt.step()
    model.eval()
    paths = model.to_allennlp(tmp_path)
    assert set(paths) == {"options", "weights", "softmax"}
    again = BiLM.from_allennlp(paths["options"], paths["weights"], softmax_file=paths["softmax"])
    assert again.config.vocab_size == 11 and again.config.dropout == pytest.approx(0.1)
    assert torch.equal(embed(model), embed(again))
    with torch.no_grad():
        assert torch.equal(model.lm_loss(chars, targets, targets)[0].loss, again.lm_loss(chars, targets, targets)[0].loss)
    without = BiLM.from_allennlp(paths["options"], paths["weights"])
    assert without.softmax is None and torch.equal(embed(model), embed(without))


def test_adaptive_softmax_round_trips(tmp_path):
    model = randomised(BiLM(small_config(vocab_size=30, softmax="adaptive", adaptive_cutoffs=[10, 20])))
    paths = model.to_allennlp(tmp_path)
    again = BiLM.from_allennlp(paths["options"], paths["weights"], softmax_file=paths["softmax"])
    assert again.config.softmax == "adaptive" and again.config.adaptive_cutoffs == [10, 20]
    for key, value in model.softmax.state_dict().items():
        assert torch.equal(value, again.softmax.state_dict()[key]), key


# ------------------------------------------------------------------------------ errors
def _fixture_options() -> dict:
    model = BiLM(small_config())
    return options_from_config(model.config)


@pytest.mark.parametrize("path", ["lstm.dim", "lstm.projection_dim", "lstm.n_layers", "lstm.use_skip_connections",
                                  "char_cnn.filters", "char_cnn.n_highway", "char_cnn.embedding.dim",
                                  "char_cnn.activation", "char_cnn.max_characters_per_token", "char_cnn"])
def test_missing_option_is_named(path):
    options = _fixture_options()
    node = options
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    del node[last]
    with pytest.raises(ELMoFormatError) as info:
        config_from_options(options, "opts.json")
    message = str(info.value)
    assert "\n" not in message and "opts.json" in message
    assert repr(path) in message or (path == "char_cnn" and "'char_cnn." in message)


@pytest.mark.parametrize("path,value,needle", [
    ("char_cnn.activation", "sigmoid", "'char_cnn.activation'"),
    ("char_cnn.filters", [[1, 4], [2]], "'char_cnn.filters'"),
    ("char_cnn.filters", [[0, 4]], "'char_cnn.filters'"),
    ("char_cnn.n_characters", 300, "'char_cnn.n_characters'"),
    ("char_cnn.max_characters_per_token", 60, "'char_cnn.max_characters_per_token'"),
    ("lstm.dim", "64", "'lstm.dim'"),
    ("lstm.cell_clip", -1, "'lstm.cell_clip'"),
    ("lstm.use_skip_connections", "yes", "'lstm.use_skip_connections'"),
    ("bidirectional", False, "'bidirectional'"),
])
def test_wrong_option_is_named(path, value, needle):
    options = _fixture_options()
    node = options
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(ELMoFormatError, match=needle):
        config_from_options(options)


def test_options_file_problems(tmp_path):
    with pytest.raises(ELMoFormatError, match="options file not found"):
        read_options(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ELMoFormatError, match="not valid JSON"):
        read_options(bad)


@pytest.fixture
def exported(tmp_path):
    model = randomised(BiLM(small_config()))
    paths = model.to_allennlp(tmp_path / "good")
    return model, paths


def test_missing_dataset_is_named(tmp_path, exported):
    model, paths = exported
    broken = tmp_path / "missing.hdf5"
    shutil.copyfile(paths["weights"], broken)
    with h5py.File(broken, "a") as f:
        del f["RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"]
    with pytest.raises(ELMoFormatError, match=r"missing dataset 'RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0'"):
        BiLM.from_allennlp(paths["options"], broken)


def test_dataset_of_wrong_shape_is_named(tmp_path, exported):
    model, paths = exported
    broken = tmp_path / "shape.hdf5"
    shutil.copyfile(paths["weights"], broken)
    with h5py.File(broken, "a") as f:
        del f["CNN/W_cnn_1"]
        f["CNN/W_cnn_1"] = np.zeros((1, 3, 4, 6), np.float32)
    with pytest.raises(ELMoFormatError, match=r"'CNN/W_cnn_1' has shape \(1, 3, 4, 6\), the options need \(1, 2, 4, 6\)"):
        BiLM.from_allennlp(paths["options"], broken)


def test_options_that_do_not_fit_the_weights(tmp_path, exported):
    """An options file for another model (here: 3 highways) names the first dataset that is missing."""
    model, paths = exported
    options = json.loads(paths["options"].read_text())
    options["char_cnn"]["n_highway"] = 3
    other = tmp_path / "other.json"
    other.write_text(json.dumps(options))
    with pytest.raises(ELMoFormatError, match="missing dataset 'CNN_high_1/W_carry'"):
        BiLM.from_allennlp(other, paths["weights"])


@pytest.mark.parametrize("damage", ["garbage", "truncated-half", "truncated-tail", "empty"])
def test_corrupt_or_truncated_hdf5_gets_a_clear_error(tmp_path, exported, damage):
    model, paths = exported
    data = paths["weights"].read_bytes()
    broken = tmp_path / f"{damage}.hdf5"
    if damage == "garbage":
        broken.write_bytes(data[:64] + bytes(range(256)) * 40 + data[64 + 256 * 40:])
    elif damage == "truncated-half":
        broken.write_bytes(data[: len(data) // 2])
    elif damage == "truncated-tail":
        broken.write_bytes(data[:-100])
    else:
        broken.write_bytes(b"")
    with pytest.raises(ELMoFormatError) as info:
        BiLM.from_allennlp(paths["options"], broken)
    message = str(info.value)
    assert str(broken) in message and "\n" not in message
    assert any(w in message for w in ("corrupt", "truncated", "missing dataset", "NaN")), message


def test_missing_weight_file(tmp_path, exported):
    model, paths = exported
    with pytest.raises(ELMoFormatError, match="weight file not found"):
        BiLM.from_allennlp(paths["options"], tmp_path / "absent.hdf5")


def test_weight_table_covers_every_parameter_but_the_softmax():
    model = BiLM(small_config(vocab_size=5))
    covered = sum(e.get().numel() for e in weight_table(model))
    padding_row = model.config.char_embed_dim
    assert covered == model.num_parameters() - padding_row


def test_load_weights_zeroes_the_padding_row(exported):
    model, paths = exported
    other = BiLM(small_config())
    with torch.no_grad():
        other.encoder.char_embed.weight.fill_(1.0)
    load_weights(other, paths["weights"])
    assert not other.encoder.char_embed.weight[0].any()


# ------------------------------------------------------------------------------ CLI convert
def test_cli_convert_errors_are_one_line(tmp_path, exported, capsys):
    from elmo_dist.cli import main
    model, paths = exported
    code = main(["convert", "--from-allennlp", str(paths["options"]), str(tmp_path / "absent.hdf5"),
                 "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "absent.hdf5" in err
    assert not (tmp_path / "run").exists()  # nothing written when the files are bad
    # A softmax file for another vocabulary is found out after the vocabulary is built: the
    # half-made run directory is removed.
    trained = randomised(BiLM(small_config(vocab_size=50)))
    other = trained.to_allennlp(tmp_path / "other")
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d e f\n" * 20)
    code = main(["convert", "--from-allennlp", str(other["options"]), str(other["weights"]), "--run-dir",
                 str(tmp_path / "run"), "--softmax-weights", str(other["softmax"]), "--corpus", str(corpus),
                 "--batch-size", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "softmax over 50 words does not fit" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert main(["convert", str(tmp_path / "norun"), "--to-allennlp", str(tmp_path / "x")]) == 2


def test_cli_convert_both_ways_and_resume(tmp_path, exported, capsys):
    """AllenNLP files -> run directory -> `pretrain --resume` fine-tunes -> back to AllenNLP files."""
    from elmo_dist.cli import main
    from elmo_dist.train.rundir import load_model
    model, paths = exported
    corpus = tmp_path / "domain.txt"
    corpus.write_text("".join(f"the {w} sat on a mat number {i} .\n" for i, w in enumerate(["cat", "dog", "owl"] * 8)))
    run = tmp_path / "run"
    assert main(["convert", "--from-allennlp", str(paths["options"]), str(paths["weights"]), "--run-dir", str(run),
                 "--corpus", str(corpus), "--batch-size", "2", "--num-steps", "5", "--optimizer", "adam",
                 "--lr", "1e-3", "--eval-every", "0", "--checkpoint-every", "0", "--wandb", "disabled",
                 "--no-progress"]) == 0
    converted, cfg, vocab = load_model(run)
    assert cfg.model.vocab_size == len(vocab) and converted.softmax is not None
    assert torch.equal(embed(converted), embed(model))  # the imported biLM, untouched
    assert main(["pretrain", "--resume", "--run-dir", str(run), "--max-steps", "2", "--no-progress",
                 "--threads", "1"]) == 0
    tuned, _, _ = load_model(run)
    assert not torch.equal(embed(tuned), embed(model))  # fine-tuning moved the weights
    out = tmp_path / "back"
    assert main(["convert", str(run), "--to-allennlp", str(out)]) == 0
    assert (out / "vocab.txt").read_text() == (run / "vocab.txt").read_text()
    back = BiLM.from_allennlp(out / "options.json", out / "lm_weights.hdf5", out / "softmax_weights.hdf5")
    assert torch.equal(embed(back), embed(tuned))
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
