"""elmo-dist vocab: build a bilm-tf vocabulary file from a corpus."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import parser, run_guarded

DESCRIPTION = """\
Count the words of a corpus (streamed, never held in memory) and write a vocabulary in the
bilm-tf format: <S>, </S>, <UNK> first, then words by descending frequency (ties by the word).
Lines with invalid UTF-8, blank lines and lines over --max-line-bytes are skipped and counted.
"""


def build_parser():
    p = parser("elmo-dist vocab", DESCRIPTION)
    p.add_argument("corpus", nargs="*", help="files, directories or globs (one sentence per line); default: PTB train")
    p.add_argument("--out", type=Path, required=True, help="vocabulary file to write (atomically)")
    p.add_argument("--tokenizer", default="whitespace", help="whitespace (pre-tokenized), treebank, nltk or toktok")
    p.add_argument("--min-count", type=int, default=1, help="drop words seen fewer times")
    p.add_argument("--max-size", type=int, default=None, help="keep at most this many entries (specials included)")
    p.add_argument("--max-line-bytes", type=int, default=1_000_000, help="skip longer lines")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from elmo_dist.train import DataConfig
        from elmo_dist.data import resolve_corpus_paths
        from elmo_dist.train.rundir import build_vocabulary, resolve_data

        from .paths import check_output_file
        data = resolve_data(DataConfig(train=list(args.corpus), tokenizer=args.tokenizer,
                                       vocab_min_count=args.min_count, vocab_max_size=args.max_size,
                                       max_line_bytes=args.max_line_bytes))
        check_output_file(args.out, "--out", [("a corpus file", f) for f in resolve_corpus_paths(data.train)])
        vocab, report = build_vocabulary(data, progress=not args.no_progress)
        vocab.save(args.out)
        print(f"{report.summary()}")
        print(f"wrote {len(vocab)} entries to {args.out}")
        return 0

    return run_guarded("elmo-dist vocab", run)
