"""elmo-dist export: sentence embeddings (HDF5) or a vocabulary's token embeddings."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from .common import add_threads, apply_threads, parser, run_guarded

DESCRIPTION = """\
Embed the sentences of a text file (one per line) with a biLM and write HDF5 in the convention
of AllenNLP's old `elmo` command: one float32 dataset per line, key = 0-based line number,
(L+1, T, 2P) with --all, (T, 2P) with --top or --average; plus `sentence_to_index`, a JSON map
from sentence to key. --sentence-vectors writes one vector per line instead, the mean over its
T tokens: (L+1, 2P) with --all, (2P,) with --top or --average (zeros for a blank line). The
model comes from a run directory (--run-dir) or from bilm-tf/AllenNLP files (--options and
--weights).

  elmo-dist export sentences.txt out.hdf5 --top --run-dir runs/ptb
  elmo-dist export sentences.txt out.hdf5 --all --options options.json --weights lm_weights.hdf5
  elmo-dist export sentences.txt vectors.hdf5 --average --sentence-vectors --run-dir runs/ptb
  elmo-dist export --vocab-embeddings vocab.txt tokens.hdf5 --run-dir runs/ptb

Stateless by default: each sentence's vectors depend on that sentence only (batches are formed
by length). --stateful carries each batch row's LSTM state to the next batch in file order,
as AllenNLP's ElmoEmbedder did (its first batches start from a zero state, reported to hurt
their vectors slightly; --warm-up-batches N runs the first N batches once before the export). A
blank line gets an empty dataset (T = 0). A line over --max-tokens tokens is embedded whole, in
windows of --max-tokens with the LSTM state carried from window to window (the same vectors as
one pass, memory bounded by the window), or cut with --long-lines cut; both are counted in the
closing report. The output is written under a temporary name and renamed when complete.

--vocab-embeddings VOCAB writes context-independent token embeddings instead (bilm-tf's
dump_token_embeddings): dataset `embedding` (V, P), the character-CNN output of each word of the
vocabulary file, and `words` (V,).
"""


def build_parser() -> argparse.ArgumentParser:
    p = parser("elmo-dist export", DESCRIPTION)
    p.add_argument("input", type=Path, nargs="?", default=None,
                   help="text file, one sentence per line (not with --vocab-embeddings)")
    p.add_argument("output", type=Path, help="HDF5 file to write")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--all", dest="mode", action="store_const", const="all",
                      help="write every layer, (L+1, T, 2P) per sentence (the default)")
    mode.add_argument("--top", dest="mode", action="store_const", const="top", help="write the top layer, (T, 2P)")
    mode.add_argument("--average", dest="mode", action="store_const", const="average",
                      help="write the mean of the layers, (T, 2P)")
    mode.add_argument("--vocab-embeddings", type=Path, default=None, metavar="VOCAB",
                      help="write the token embeddings of the words in VOCAB (one per line) instead")
    g = p.add_argument_group("model (a run directory, or AllenNLP files)")
    g.add_argument("--run-dir", type=Path, default=None, help="run directory made by `elmo-dist pretrain`")
    g.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint directory of the run (default: the latest valid)")
    g.add_argument("--options", type=Path, default=None, help="bilm-tf/AllenNLP options.json")
    g.add_argument("--weights", type=Path, default=None, help="bilm-tf/AllenNLP lm_weights.hdf5")
    g = p.add_argument_group("input and batching")
    g.add_argument("--tokenizer", default="whitespace", help="whitespace (pre-tokenized), treebank, nltk or toktok")
    g.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    g.add_argument("--batch-tokens", type=int, default=4096, help="at most this many padded tokens per batch (stateless)")
    g.add_argument("--max-tokens", type=int, default=1000,
                   help="longest run of tokens embedded at once; longer lines go in windows of this size "
                        "(or are cut, --long-lines cut)")
    g.add_argument("--long-lines", choices=["window", "cut"], default="window",
                   help="a line over --max-tokens: embed it whole in windows, state carried (exact), or cut it")
    g.add_argument("--sentence-vectors", action="store_true",
                   help="write the mean over each line's tokens: (L+1, 2P) with --all, (2P,) with --top/--average")
    g.add_argument("--stateful", action="store_true",
                   help="carry LSTM state from batch to batch along each row, in file order (AllenNLP's behaviour)")
    g.add_argument("--warm-up-batches", type=int, default=0,
                   help="with --stateful: run the first N batches once, outputs discarded, so that no row "
                        "starts the export from a zero LSTM state")
    g.add_argument("--device", default=None, help="cpu or cuda[:k] (default: cuda when available)")
    g.add_argument("--report", type=Path, default=None, help="also write the closing report as JSON here")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads(p)
    return p


def load_bilm(args, stateful: bool):
    """The biLM named by --run-dir or --options/--weights, in eval mode on the chosen device."""
    from elmo_dist.runs import load_bilm as load
    return load(args.run_dir, args.checkpoint, args.options, args.weights, args.device, stateful=stateful)


def check_outputs(args) -> None:
    """OUTPUT and --report: files, distinct from each other and from every file the export reads."""
    from elmo_dist.train.rundir import run_inputs

    from .paths import check_output_file
    inputs = [("the input file", args.input), ("the --vocab-embeddings file", args.vocab_embeddings),
              ("the --options file", args.options), ("the --weights file", args.weights)] + run_inputs(args.run_dir)
    check_output_file(args.output, "OUTPUT", inputs)
    check_output_file(args.report, "--report", inputs + [("the OUTPUT file", args.output)])


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from elmo_dist.utils import atomic_write_json
        apply_threads(args.threads)
        check_outputs(args)
        if args.vocab_embeddings is not None:
            if args.input is not None:
                raise ValueError("--vocab-embeddings VOCAB takes only the OUTPUT path; drop the extra input file")
            if args.sentence_vectors:
                raise ValueError("--sentence-vectors applies to sentence export, not to --vocab-embeddings")
            from elmo_dist.export import export_token_embeddings
            counts = export_token_embeddings(load_bilm(args, stateful=False), args.vocab_embeddings, args.output)
            line = f"wrote {args.output}: token embeddings of {counts['words']} words, dim {counts['dim']}"
            if counts["blank_lines"]:
                line += f" ({counts['blank_lines']} blank lines of {args.vocab_embeddings} skipped)"
            print(line)
            if args.report:
                atomic_write_json(args.report, counts)
            return 0
        if args.input is None:
            raise ValueError("give INPUT OUTPUT (a text file to embed and the HDF5 file to write)")
        from elmo_dist.data.tokenize import get_tokenizer
        from elmo_dist.export import Embedder, export_sentences
        args.mode = args.mode or "all"
        if args.warm_up_batches and not args.stateful:
            raise ValueError("--warm-up-batches needs --stateful (stateless, every sentence starts from the "
                             "same zero state by definition)")
        tokenizer = get_tokenizer(args.tokenizer)
        embedder = Embedder(load_bilm(args, stateful=args.stateful), stateful=args.stateful)
        report = export_sentences(embedder, args.input, args.output, mode=args.mode, tokenizer=tokenizer,
                                  batch_size=args.batch_size, max_batch_tokens=args.batch_tokens,
                                  max_tokens=args.max_tokens, progress=not args.no_progress,
                                  sentence_vectors=args.sentence_vectors, long_lines=args.long_lines,
                                  warm_up_batches=args.warm_up_batches)
        kind = f"{args.mode}{', sentence vectors' if args.sentence_vectors else ''}"
        print(f"wrote {args.output} ({kind}, {'stateful' if args.stateful else 'stateless'}): {report.summary()}")
        if args.report:
            atomic_write_json(args.report, report.as_dict())
        return 0

    return run_guarded("elmo-dist export", run)
