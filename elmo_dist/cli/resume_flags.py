"""What ``pretrain --resume`` does with the flags given beside it.

A resumed run keeps its configuration (config.json). Flags that only steer the rest of the run
(the budget, the learning rate and its schedule, eval/checkpoint/log cadence, wandb, the LSTM
implementation) are **applied**, and each change is printed. Flags that define what the
checkpoint holds or how the data is laid out (preset, corpus, vocabulary, batch shape,
optimizer, seed, ...) are **refused** when their value differs from the run's, in one line
naming the flag; the same value is fine, so one command line (``--resume auto``) serves the
first start and every restart.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SAFE = {  # argparse dest -> (config section, field)
    "max_steps": ("train", "max_steps"), "max_minutes": ("train", "max_minutes"), "epochs": ("train", "epochs"),
    "early_stop_patience": ("train", "early_stop_patience"),
    "lr": ("optim", "lr"), "lr_schedule": ("optim", "schedule"), "min_lr_ratio": ("optim", "min_lr_ratio"),
    "warmup_steps": ("optim", "warmup_steps"), "grad_clip": ("optim", "grad_clip"),
    "eval_every": ("train", "eval_every"), "eval_max_batches": ("train", "eval_max_batches"),
    "checkpoint_every": ("train", "checkpoint_every"), "keep_checkpoints": ("train", "keep_checkpoints"),
    "log_every": ("train", "log_every"), "wandb": ("train", "wandb_mode"), "lstm_impl": ("model", "lstm_impl"),
}
UNSAFE = {
    "corpus": ("data", "train"), "valid": ("data", "valid"), "tokenizer": ("data", "tokenizer"),
    "min_count": ("data", "vocab_min_count"), "max_vocab": ("data", "vocab_max_size"),
    "max_line_bytes": ("data", "max_line_bytes"), "softmax": ("model", "softmax"),
    "cutoffs": ("model", "adaptive_cutoffs"), "dropout": ("model", "dropout"), "optimizer": ("optim", "optimizer"),
    "batch_size": ("train", "batch_size"), "num_steps": ("train", "num_steps"),
    "grad_accum": ("train", "grad_accum_steps"), "precision": ("train", "precision"), "seed": ("train", "seed"),
}
ARCHITECTURE_EXEMPT = {"vocab_size", "lstm_impl", "softmax", "adaptive_cutoffs", "dropout"}
"""ModelConfig fields that --preset does not set (the vocabulary and their own flags do)."""


def given_flags(build_parser, argv: list[str]) -> set[str]:
    """The dests of the options present on the command line: ``build_parser()``'s parser with
    every default suppressed, so that only what was typed lands in the namespace."""
    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to list them
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def resume_overrides(given: set[str], new, old, run_dir: Path, vocab_file=None, say=print) -> dict:
    """``section.field -> value`` for the safe flags in ``given`` (``new``: the config the command
    line describes; ``old``: the run's); ``ValueError`` naming the first unsafe flag whose value
    differs from the run's."""
    from elmo_dist.train.rundir import resolve_data
    resolved = resolve_data(new.data)
    for dest in sorted(given & (set(UNSAFE) | {"preset", "vocab"})):
        before, after = _unsafe_values(dest, new, resolved, old, run_dir, vocab_file)
        if before != after:
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag} differs from the run's ({_short(after)} here, {_short(before)} in "
                             f"{Path(run_dir) / 'config.json'}): a resumed run keeps it; drop {flag} or start a new "
                             "--run-dir")
    overrides = {}
    for dest in sorted(given & set(SAFE)):
        section, field = SAFE[dest]
        before, after = getattr(getattr(old, section), field), getattr(getattr(new, section), field)
        overrides[f"{section}.{field}"] = after
        if before != after:
            say(f"resume: --{dest.replace('_', '-')} {_short(after)} replaces the run's {_short(before)}")
    return overrides


def _unsafe_values(dest, new, resolved, old, run_dir, vocab_file):
    """(the run's value, the command line's value) of an unsafe flag, in comparable form."""
    if dest == "preset":
        arch = lambda m: {k: v for k, v in m.to_dict().items() if k not in ARCHITECTURE_EXEMPT}  # noqa: E731
        return arch(old.model), arch(new.model)
    if dest == "vocab":
        from elmo_dist.data import Vocabulary
        from elmo_dist.train.rundir import vocab_path
        return Vocabulary.from_file(vocab_path(run_dir)).words, Vocabulary.from_file(vocab_file).words
    section, field = UNSAFE[dest]
    after = getattr(resolved if section == "data" else getattr(new, section), field)
    return getattr(getattr(old, section), field), after


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
