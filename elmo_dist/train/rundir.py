"""The run directory: everything later stages need, so they take only the run path.

    RUN/config.json       resolved RunConfig (corpus paths absolute)
    RUN/vocab.txt         bilm-tf vocabulary
    RUN/data_report.json  what the vocabulary pass read and skipped
    RUN/checkpoints/      see checkpoint.py
    RUN/metrics.jsonl     one JSON record per log/eval event
    RUN/summary.json      final figures of the last pretrain call
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from elmo_dist.data import Corpus, SkipReport, Vocabulary, count_words, ptb_paths
from elmo_dist.model import BiLM, ModelConfig

from .checkpoint import CheckpointError, latest_valid, load_checkpoint
from .config import DataConfig, RunConfig


def cache_dir() -> Path:
    """Where the PTB text files are written once: $ELMO_DIST_CACHE or ~/.cache/elmo-dist."""
    return Path(os.environ.get("ELMO_DIST_CACHE", Path.home() / ".cache" / "elmo-dist"))


def _absolute(specs: list) -> list:
    """Corpus specs (files, directories, globs) made absolute, so a resume from another
    working directory finds the same files."""
    return [str(Path(spec).expanduser().absolute()) for spec in specs]


def resolve_data(data: DataConfig) -> DataConfig:
    """Absolute corpus paths; the PTB default corpus (train / valid) when none was given."""
    if data.train:
        return DataConfig(**{**data.__dict__, "train": _absolute(data.train), "valid": _absolute(data.valid)})
    paths = ptb_paths(cache_dir() / "ptb")
    valid = _absolute(data.valid) if data.valid else [str(paths["valid"])]
    return DataConfig(**{**data.__dict__, "train": [str(paths["train"])], "valid": valid})


def ptb_test_path() -> Path:
    return ptb_paths(cache_dir() / "ptb")["test"]


def make_corpus(specs: list, data: DataConfig) -> Corpus:
    from elmo_dist.data import resolve_corpus_paths
    return Corpus(resolve_corpus_paths(specs), tokenizer=data.tokenizer, max_line_bytes=data.max_line_bytes)


def build_vocabulary(data: DataConfig, progress: bool = True) -> tuple[Vocabulary, SkipReport]:
    report = SkipReport()
    counts = count_words(make_corpus(data.train, data), report, progress=progress)
    if not counts:
        raise ValueError(f"the training corpus {data.train} holds no tokens ({report.summary()})")
    return Vocabulary.build(counts, min_count=data.vocab_min_count, max_size=data.vocab_max_size), report


def vocab_path(run_dir: Path) -> Path:
    return Path(run_dir) / "vocab.txt"


def load_run_config(run_dir: Path) -> RunConfig:
    return RunConfig.load(Path(run_dir) / "config.json")


def init_model(config: ModelConfig, seed: int, stateful: bool = True) -> BiLM:
    """The untrained biLM that pretraining starts from: ``torch.manual_seed(seed)``, then
    ``BiLM(config)`` on the CPU (the trainer moves it to its device afterwards). Seeds the global
    torch RNG as a side effect (the trainer's dropout draws continue from that state). The one
    place the initialisation is defined: the trainer and classify's random-init control call it."""
    torch.manual_seed(seed)
    return BiLM(config, stateful=stateful)


def load_model(run_dir: Path, checkpoint: Optional[Path] = None, stateful: bool = True) -> tuple[BiLM, RunConfig, Vocabulary]:
    """The biLM of a run from its latest valid (or the given) checkpoint, in eval mode."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    vocab = Vocabulary.from_file(vocab_path(run_dir))
    if checkpoint is not None:
        _, state_and_meta = checkpoint, load_checkpoint(checkpoint)
        state = state_and_meta[0]
    else:
        found = latest_valid(run_dir)
        if found is None:
            raise CheckpointError(f"{run_dir}: no loadable checkpoint under {run_dir / 'checkpoints'}; train first with `elmo-dist pretrain --run-dir {run_dir}`")
        state = found[1]
    model = BiLM(cfg.model, stateful=stateful)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, vocab


def run_inputs(run_dir: Optional[Path]) -> list[tuple[str, Path]]:
    """The files of a run directory that later stages read, as (what, path) pairs for the
    output-path checks (``cli.paths``)."""
    if run_dir is None:
        return []
    run_dir = Path(run_dir)
    return [("a file of the run directory", run_dir / name) for name in ("config.json", "vocab.txt", "summary.json")]
