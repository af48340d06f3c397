"""The ``elmo-dist`` command: one entry point, a table of subcommands.

Each subcommand is a module with ``main(argv) -> int`` that tests call in-process.
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional

# name -> (module, one-line description)
SUBCOMMANDS = {
    "demo": ("elmo_dist.cli.demo", "the quick start: pretrain a tiny biLM on Penn Treebank, evaluate it, classify BBC News with its layers"),
    "vocab": ("elmo_dist.cli.vocab", "build a bilm-tf vocabulary file from a corpus"),
    "pretrain": ("elmo_dist.cli.pretrain", "pretrain a biLM (new run or --resume) with DeepSpeed"),
    "evaluate": ("elmo_dist.cli.evaluate", "forward, backward and average perplexity of a run on a corpus"),
    "export": ("elmo_dist.cli.export", "sentence embeddings to HDF5 (--all/--top/--average), or token embeddings of a vocabulary"),
    "convert": ("elmo_dist.cli.convert", "run directory <-> bilm-tf/AllenNLP options.json + lm_weights.hdf5"),
    "bench": ("elmo_dist.cli.bench", "run the benchmark suites (pytest-benchmark) and render the report"),
    "classify": ("elmo_dist.cli.classify", "train and evaluate a text classifier on ELMo layers (default: BBC News), with baselines"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: elmo-dist <subcommand> [options]   (elmo-dist <subcommand> --help for its options)", "",
             "subcommands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `deepspeed --module elmo_dist` puts --local_rank=N before the subcommand; LOCAL_RANK is
    # in the environment too, which is what the training code reads.
    argv = [a for a in argv if not a.startswith("--local_rank=")]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from elmo_dist import __version__
        print(f"elmo-dist {__version__}")
        return 0
    name = argv[0]
    if name not in SUBCOMMANDS:
        print(f"elmo-dist: unknown subcommand {name!r}; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
