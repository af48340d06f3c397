"""elmo-dist demo: the quick start, end to end on the embedded Penn Treebank and BBC News data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import parser, run_guarded

DESCRIPTION = """\
Pretrain the `tiny` biLM on the Penn Treebank (from the `treebank` package) for a few minutes
on whatever this machine has, report held-out and test perplexity, then classify BBC News with
the biLM's layers: the three layer combinations (scalar mix, equal weights, learned) and the
layer-0 and bag-of-words baselines, ending with the classifier's test accuracy. Equivalent to

  elmo-dist pretrain --preset tiny --max-minutes M ...      elmo-dist evaluate RUN
  elmo-dist classify --run-dir RUN --out RUN/classify-bbc-news --baselines --text-style ptb
      --max-tokens 64 --encoder bilstm --epochs 8 --patience 3

To keep the classify stage to a minute or two on two cores, each article is cut to its first
--classify-tokens tokens (the title and the first sentence or two), written in the style of the
PTB text the biLM learned from (lower case, numbers as N, no punctuation), and each classifier
trains at most 8 epochs. `elmo-dist classify` alone defaults to 128 tokens and 20 epochs.
"""


def build_parser():
    p = parser("elmo-dist demo", DESCRIPTION)
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run directory (must not exist yet)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--classify-tokens", type=int, default=64, help="tokens per BBC article for the classifier")
    p.add_argument("--no-classify", action="store_true", help="stop after the perplexities (no BBC News stage)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from . import classify, evaluate, pretrain
        quiet = ["--no-progress"] if args.no_progress else []
        # Adam at 2e-3 with batch 32 reaches a lower perplexity than Adagrad in a few minutes.
        code = pretrain.main(["--run-dir", str(args.run_dir), "--preset", "tiny", "--max-minutes", str(args.minutes),
                              "--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32",
                              "--eval-every", "0", "--checkpoint-every", "200", *quiet])
        if code:
            return code
        code = evaluate.main([str(args.run_dir), "--out", str(args.run_dir / "test_perplexity.json"), *quiet])
        if code or args.no_classify:
            return code
        return classify.main(["--run-dir", str(args.run_dir), "--out", str(args.run_dir / "classify-bbc-news"),
                              "--mode", "all", "--baselines", "--text-style", "ptb",
                              "--max-tokens", str(args.classify_tokens), "--encoder", "bilstm",
                              "--epochs", "8", "--patience", "3", *quiet])

    return run_guarded("elmo-dist demo", run)
