"""elmo-dist convert: a run directory to bilm-tf/AllenNLP files, and AllenNLP files to a run directory."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Optional

from .common import add_threads, apply_threads, parser, run_guarded

DESCRIPTION = """\
Convert between elmo-dist run directories and the bilm-tf/AllenNLP format (options.json +
lm_weights.hdf5), in either direction.

  elmo-dist convert RUN --to-allennlp DIR
      writes DIR/options.json and DIR/lm_weights.hdf5 (load them with AllenNLP's Elmo or
      `BiLM.from_allennlp`), plus DIR/softmax_weights.hdf5 and DIR/vocab.txt: the format has no
      softmax, so it goes to a separate file, with the vocabulary its rows follow.

  elmo-dist convert --from-allennlp options.json lm_weights.hdf5 --run-dir RUN [--vocab FILE]
                    [pretrain options: --corpus, --valid, --tokenizer, --optimizer, --lr, ...]
      makes a new run directory (config.json, vocab.txt, a step-0 checkpoint) holding the
      imported biLM and a freshly initialised softmax for the vocabulary, so that
      `elmo-dist pretrain --resume --run-dir RUN [--max-steps N]` fine-tunes it on the corpus.
      Without --vocab the vocabulary is built from --corpus (default: PTB train) as pretrain
      does. --softmax-weights reuses a softmax written by --to-allennlp (its vocabulary must be
      the one given). A failure leaves no half-made run directory.
"""


def build_parser() -> argparse.ArgumentParser:
    p = parser("elmo-dist convert", DESCRIPTION)
    p.add_argument("run", type=Path, nargs="?", default=None, help="run directory to export (with --to-allennlp)")
    p.add_argument("--to-allennlp", type=Path, default=None, metavar="DIR", help="write the run's biLM to DIR")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to export (default: the run's latest valid)")
    _add_from_args(p)
    add_threads(p)
    return p


def _add_from_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("from AllenNLP files to a run directory")
    g.add_argument("--from-allennlp", nargs=2, type=Path, default=None, metavar=("OPTIONS", "WEIGHTS"),
                   help="bilm-tf/AllenNLP options.json and lm_weights.hdf5 to import")
    g.add_argument("--run-dir", type=Path, default=None, help="run directory to create")
    g.add_argument("--vocab", type=Path, default=None, help="vocabulary of the new softmax (default: built from --corpus)")
    g.add_argument("--softmax-weights", type=Path, default=None,
                   help="softmax_weights.hdf5 from --to-allennlp to start from (default: a fresh softmax)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _from_parser() -> argparse.ArgumentParser:
    p = parser("elmo-dist convert", DESCRIPTION)
    _add_from_args(p)
    add_threads(p)
    return p


def to_allennlp(run: Path, out_dir: Path, checkpoint: Optional[Path]) -> dict:
    from elmo_dist.runs import load_run
    from elmo_dist.train.rundir import vocab_path
    model, _, _ = load_run(run, checkpoint)
    paths = model.to_allennlp(out_dir)
    if "softmax" in paths:
        paths["vocab"] = Path(out_dir) / "vocab.txt"
        shutil.copyfile(vocab_path(run), paths["vocab"])
    return paths


def from_allennlp(options: Path, weights: Path, run_dir: Path, vocab_file: Optional[Path],
                  softmax_file: Optional[Path], pretrain_argv: list[str], progress: bool) -> Path:
    """Makes run_dir from AllenNLP files; returns the checkpoint written (see DESCRIPTION)."""
    from elmo_dist.model import BiLM
    from elmo_dist.model.allennlp_format import load_weights, read_options, read_softmax_config
    from elmo_dist.train import RunConfig

    from . import pretrain

    for flag in ("--preset", "--resume"):
        if flag in pretrain_argv:
            raise ValueError(f"{flag} does not apply to convert --from-allennlp: the model comes from {options}")
    if (Path(run_dir) / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; choose a new --run-dir")
    args = pretrain.build_parser().parse_args([*pretrain_argv, "--run-dir", str(run_dir)])
    base = pretrain.config_from_args(args)
    overrides = {"softmax": base.model.softmax, "adaptive_cutoffs": base.model.adaptive_cutoffs,
                 "lstm_impl": base.model.lstm_impl}
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    # Read and check every file before anything is written into run_dir.
    model_cfg = read_options(options, **overrides)
    imported = BiLM(model_cfg.replace(vocab_size=0))
    load_weights(imported, weights)
    if softmax_file is not None:
        read_softmax_config(softmax_file)
    created = not Path(run_dir).exists()
    try:
        return _make_run(RunConfig(model_cfg, base.data, base.optim, base.train), run_dir, vocab_file, progress,
                         imported, softmax_file, {"options": str(Path(options).resolve()),
                                                  "weights": str(Path(weights).resolve())})
    except BaseException:
        if created:  # leave no half-made run directory behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _make_run(cfg, run_dir: Path, vocab_file: Optional[Path], progress: bool, imported, softmax_file: Optional[Path],
              source: dict) -> Path:
    """Writes config.json, vocab.txt and the step-0 checkpoint of the imported biLM into run_dir."""
    import torch

    from elmo_dist.data import WindowBatcher
    from elmo_dist.model import BiLM
    from elmo_dist.model.allennlp_format import load_softmax, read_softmax_config
    from elmo_dist.train.checkpoint import build_state, save_checkpoint
    from elmo_dist.train.distributed import build_optimizer
    from elmo_dist.train.loop import prepare_run
    from elmo_dist.train.rundir import make_corpus

    cfg, vocab = prepare_run(cfg, run_dir, vocab_file, progress)
    if softmax_file is not None:
        saved = read_softmax_config(softmax_file)
        if saved["vocab_size"] != len(vocab) or saved["softmax"] != cfg.model.softmax:
            raise ValueError(f"{softmax_file}: a {saved['softmax']} softmax over {saved['vocab_size']} words does not "
                             f"fit this run's {cfg.model.softmax} softmax over {len(vocab)} words (--vocab, --softmax)")
    torch.manual_seed(cfg.train.seed)
    model = BiLM(cfg.model)  # the softmax starts fresh for the new vocabulary
    missing, unexpected = model.load_state_dict(imported.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("softmax.") for k in missing), (missing, unexpected)
    if softmax_file is not None:
        load_softmax(model, softmax_file)
    tc = cfg.train
    batcher = WindowBatcher(make_corpus(cfg.data.train, cfg.data), vocab, tc.batch_size, tc.num_steps)
    # A fresh optimizer's state (Adagrad's initial accumulators, or Adam's empty state), so that
    # the resume path loads it like any other checkpoint; one rank, no carried LSTM state yet.
    state = build_state(model.state_dict(), build_optimizer(model.parameters(), cfg.optim).state_dict(), 0, 0,
                        [{"lstm": {}, "rng_cpu": torch.get_rng_state()}])
    meta = {"reason": "converted", "config": cfg.to_dict(), "source": source, "world_size": 1,
            "grad_accum_steps": tc.grad_accum_steps}
    return save_checkpoint(run_dir, 0, state, {0: batcher.state_dict()}, meta, tc.keep_checkpoints)


def main(argv: Optional[list[str]] = None) -> int:
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    from_mode = "--from-allennlp" in argv
    if from_mode:
        args, rest = _from_parser().parse_known_args(argv)
    else:
        args, rest = build_parser().parse_args(argv), []

    def run() -> int:
        apply_threads(args.threads)
        if from_mode:
            if args.run_dir is None:
                raise ValueError("--from-allennlp needs --run-dir RUN (the run directory to create)")
            options, weights = args.from_allennlp
            from .paths import check_output_dir
            check_output_dir(args.run_dir, "--run-dir")
            path = from_allennlp(options, weights, args.run_dir, args.vocab, args.softmax_weights, rest,
                                 progress=not args.no_progress)
            print(f"made run directory {args.run_dir} (checkpoint {path.name}); fine-tune with "
                  f"`elmo-dist pretrain --resume --run-dir {args.run_dir} --max-steps N`")
            return 0
        run_dir = args.run if args.run is not None else args.run_dir
        if args.to_allennlp is None or run_dir is None:
            raise ValueError("give RUN --to-allennlp DIR, or --from-allennlp OPTIONS WEIGHTS --run-dir RUN")
        from .paths import check_output_dir, same_file
        check_output_dir(args.to_allennlp, "--to-allennlp")
        if same_file(args.to_allennlp, run_dir):  # its vocab.txt would be copied onto itself
            raise ValueError(f"--to-allennlp {args.to_allennlp} is the run directory itself; give a new folder, "
                             f"e.g. {Path(run_dir) / 'allennlp'}")
        paths = to_allennlp(run_dir, args.to_allennlp, args.checkpoint)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        return 0

    return run_guarded("elmo-dist convert", run)
