"""The random-init control: the untrained biLM is exactly what `elmo-dist pretrain` starts from,
its layers are exported and cached beside the trained ones, and results carry the pretraining gain."""
import json

import h5py
import numpy as np
import pytest
import torch

from elmo_dist import BiLM, ModelConfig, batch_to_ids
from elmo_dist.classify.layers import ALLENNLP_INIT_SEED, load_random_init, random_init_source
from elmo_dist.classify.runs import model_specs
from elmo_dist.classify.summary import gain_lines, pretraining_gain
from elmo_dist.cli import main
from elmo_dist.model.allennlp_format import read_options
from elmo_dist.train import DataConfig, OptimConfig, RunConfig, TrainConfig, load_run_config, pretrain
from elmo_dist.train.checkpoint import list_checkpoints
from tests.corpus import write_corpus
from tests.unit.test_classify_cli import FAST, labelled_rows, write_tsv

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]
SEED = 7  # not TrainConfig's default: the control must read the run's own seed


def assert_same_tensors(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step pretraining run, and the weights the trainer handed to its DeepSpeed engine (its
    starting point, captured from inside `pretrain`)."""
    import elmo_dist.train.trainer as loop  # the module whose Trainer builds the engine
    tmp = tmp_path_factory.mktemp("run")
    train, valid = write_corpus(tmp / "train.txt", 200), write_corpus(tmp / "valid.txt", 20, seed=1)
    model = ModelConfig(lstm_dim=16, projection_dim=4, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 4]],
                        n_highway=1, dropout=0.1)
    cfg = RunConfig(model, DataConfig(train=[str(train)], valid=[str(valid)]), OptimConfig(optimizer="adam", lr=1e-2),
                    TrainConfig(batch_size=4, num_steps=6, max_steps=2, log_every=1, eval_every=0, checkpoint_every=0,
                                seed=SEED, wandb_mode="disabled"))
    captured, original = {}, loop.initialize_engine

    def spy(objective, optimizer, ds_cfg):
        captured.update({k: v.detach().clone() for k, v in objective.bilm.state_dict().items()})
        return original(objective, optimizer, ds_cfg)

    loop.initialize_engine = spy
    try:
        pretrain(cfg, tmp / "run", progress=False)
    finally:
        loop.initialize_engine = original
    return tmp / "run", captured


def test_control_is_the_trainers_initialisation(trained_run):
    run_dir, trainer_start = trained_run
    model_cfg, seed = random_init_source(run_dir)
    assert seed == SEED and model_cfg == load_run_config(run_dir).model
    before = torch.get_rng_state()
    control = load_random_init(model_cfg, seed, "cpu")
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    assert not control.stateful and not control.training
    assert_same_tensors(control.state_dict(), trainer_start)
    torch.manual_seed(SEED)  # an independent construction: the recipe the trainer used before init_model existed
    assert_same_tensors(control.state_dict(), BiLM(load_run_config(run_dir).model).state_dict())
    trained = torch.load(list_checkpoints(run_dir)[-1] / "state.pt", weights_only=True)["model"]
    assert any(not torch.equal(trained[k], trainer_start[k]) for k in trainer_start)  # 2 steps moved the weights


def test_control_for_allennlp_files_uses_seed_1234(tmp_path):
    cfg = ModelConfig(lstm_dim=16, projection_dim=4, n_layers=1, char_embed_dim=4, filters=[[1, 4]], n_highway=0,
                      vocab_size=0, dropout=0.0)
    BiLM(cfg, stateful=False).to_allennlp(tmp_path / "m")
    model_cfg, seed = random_init_source(None, tmp_path / "m/options.json")
    assert seed == ALLENNLP_INIT_SEED == 1234
    torch.manual_seed(1234)
    reference = BiLM(read_options(tmp_path / "m/options.json"), stateful=False)
    assert_same_tensors(load_random_init(model_cfg, seed, "cpu").state_dict(), reference.state_dict())


def test_classify_trains_the_control_caches_it_and_reports_the_gain(trained_run, tmp_path, capsys, monkeypatch):
    run_dir, _ = trained_run
    rows = labelled_rows(45)
    out = tmp_path / "o"
    argv = ["classify", "--run-dir", str(run_dir), "--labels", str(write_tsv(tmp_path / "l.tsv", rows)),
            "--out", str(out), "--mode", "scalar-mix", "--baselines", "--max-tokens", "6", *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert list(summary) == ["scalar-mix", "layer0", "random-init", "bow", "bow-sklearn", "elmo+bow", "probe",
                             "probe-random-init"]
    assert summary["random-init"]["baseline"] and not summary["elmo+bow"]["baseline"]
    control_run = next(r for r in results["runs"] if r["model"] == "random-init")
    assert control_run["combine"] == "scalar-mix" and control_run["layers"] == "random-init"
    gain = results["pretraining_gain"]
    assert gain["model"] == "scalar-mix" and gain["control"] == "random-init"
    for key in ("test_accuracy", "test_macro_f1"):
        assert gain[key] == pytest.approx(summary["scalar-mix"][key] - summary["random-init"][key])
    lines = printed.splitlines()
    table_end = next(i for i, line in enumerate(lines) if line.startswith("linear probe of the random-init biLM"))
    assert lines[table_end + 1:table_end + 3] == gain_lines(results)  # right under the table
    assert all("points test accuracy" in line for line in gain_lines(results)) and len(gain_lines(results)) == 2
    probe_gain = results["probe_gain"]
    assert (probe_gain["model"], probe_gain["control"]) == ("probe", "probe-random-init")
    assert probe_gain["test_accuracy"] == pytest.approx(summary["probe"]["test_accuracy"]
                                                        - summary["probe-random-init"]["test_accuracy"])
    probe_run = next(r for r in results["runs"] if r["model"] == "probe-random-init")
    assert probe_run["layers"] == "random-init" and probe_run["seed"] is None and probe_run["deterministic"]
    assert results["dataset"]["random_init"]["seed"] == SEED

    trained, control = (sorted((out / "cache").glob(f"{name}-*.hdf5")) for name in ("layers", "random-init"))
    assert len(trained) == len(control) == 1
    tokens = rows[0][0].split()[:6]  # treebank tokens of these rows are their words
    model_cfg, seed = random_init_source(run_dir)
    with h5py.File(control[0], "r") as f, torch.no_grad():
        expected = load_random_init(model_cfg, seed, "cpu")(batch_to_ids([tokens])).layers[0].numpy()
        assert np.allclose(f["0"][...], expected, atol=1e-5)
    with h5py.File(trained[0], "r") as f:
        assert not np.allclose(f["0"][...], expected, atol=1e-3)

    def no_model(*a, **k):
        raise RuntimeError("the cached exports should have been used")
    monkeypatch.setattr("elmo_dist.classify.layers.load_bilm", no_model)
    monkeypatch.setattr("elmo_dist.classify.layers.load_random_init", no_model)
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["dataset"]["layers"]["cache_hit"] and again["dataset"]["random_init"]["cache_hit"]
    assert again["summary"] == summary


def test_model_order_and_the_controls_classifier():
    names = lambda specs: [s.name for s in specs]  # noqa: E731
    specs = model_specs(["equal", "learned"], baselines=True, control=True)
    assert names(specs) == ["equal", "learned", "layer0", "random-init", "bow", "bow-sklearn", "elmo+bow", "probe",
                            "probe-random-init"]
    by = {s.name: s for s in specs}
    assert (by["random-init"].kind, by["random-init"].combine, by["random-init"].source) == ("layers", "equal",
                                                                                             "random-init")
    assert (by["elmo+bow"].kind, by["elmo+bow"].combine) == ("fusion", "equal")  # combined like the main mode
    specs = model_specs(["elmo+bow"], baselines=True, control=True)
    assert names(specs) == ["elmo+bow", "layer0", "random-init", "bow", "bow-sklearn", "probe", "probe-random-init"]
    assert (by["probe-random-init"].kind, by["probe-random-init"].source) == ("probe", "random-init")
    assert (specs[2].kind, specs[2].combine) == ("fusion", "scalar-mix")  # the main model, on untrained layers
    assert names(model_specs(["learned"], baselines=True, control=False))[:3] == ["learned", "layer0", "bow"]
    assert names(model_specs(["scalar-mix"], baselines=False, control=True)) == ["scalar-mix"]


def test_pretraining_gain_is_main_minus_control():
    summary = {"scalar-mix": {"test_accuracy": 0.80, "test_macro_f1": 0.70},
               "random-init": {"test_accuracy": 0.55, "test_macro_f1": 0.50}}
    gain = pretraining_gain(summary, "scalar-mix")
    assert gain["test_accuracy"] == pytest.approx(0.25) and gain["test_macro_f1"] == pytest.approx(0.20)
    assert "+25.0 points test accuracy, +20.0 points macro-F1" in gain_lines({"pretraining_gain": gain})[0]
    assert pretraining_gain({"scalar-mix": summary["scalar-mix"]}, "scalar-mix") is None
    assert gain_lines({}) == []
