"""Configuration is declared once: the CLI's defaults are the dataclasses' defaults.

Parsing a command line that gives no optional flag must build exactly the dataclass defaults
(a flag whose default drifted from its field's, like --max-steps 100000 against
TrainConfig.max_steps 1000 once did, fails here)."""
import dataclasses

from elmo_dist.model import preset
from elmo_dist.train import DataConfig, OptimConfig, TrainConfig


def test_pretrain_flags_default_to_the_run_config_dataclasses(monkeypatch):
    from elmo_dist.cli.pretrain import build_parser, config_from_args
    monkeypatch.delenv("WANDB_MODE", raising=False)  # --wandb's default is $WANDB_MODE, else the field's
    cfg = config_from_args(build_parser().parse_args([]))
    assert cfg.train == TrainConfig()
    assert cfg.optim == OptimConfig()
    assert cfg.data == DataConfig()
    assert cfg.model == preset("tiny")  # the CLI's --preset default


def test_classify_flags_default_to_classify_config():
    from elmo_dist.classify import ClassifyConfig
    from elmo_dist.cli.classify import build_parser, config_from_args
    required = dict(out="o", layers="l.hdf5", labels="t.tsv")
    cfg = config_from_args(build_parser().parse_args(
        [arg for key, value in required.items() for arg in (f"--{key}", value)]))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(ClassifyConfig(**required))


def test_every_run_config_field_is_documented():
    """Each field carries a docstring line in its dataclass (the one place it is described)."""
    import inspect

    import elmo_dist.train.config as module
    source = inspect.getsource(module)
    for cls in (DataConfig, OptimConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            decl = source.index(f"    {f.name}: ", source.index(f"class {cls.__name__}"))
            assert '"""' in source[decl:decl + 400].split("\n", 2)[1], f"{cls.__name__}.{f.name} has no docstring"


def test_wandb_flag_beats_the_environment(monkeypatch):
    from elmo_dist.cli.pretrain import build_parser, config_from_args
    monkeypatch.setenv("WANDB_MODE", "online")
    assert config_from_args(build_parser().parse_args(["--wandb", "offline"])).train.wandb_mode == "offline"
    assert config_from_args(build_parser().parse_args([])).train.wandb_mode == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert config_from_args(build_parser().parse_args([])).train.wandb_mode == "offline"
