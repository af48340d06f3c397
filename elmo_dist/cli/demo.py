"""elmo-dist demo: the quick start, end to end on embedded data (BBC News, or the Penn Treebank)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import parser, run_guarded

DESCRIPTION = """\
Pretrain the `tiny` biLM for a few minutes, report its held-out and test perplexity, then
classify BBC News with its layers against the controls that say what pretraining added.

--corpus bbc (the default): pretrain on the text of BBC News' train and dev articles, without
their labels (in-domain text); the test articles never enter pretraining and give the test
perplexity. --corpus ptb: the Penn Treebank (out of domain for BBC News), PTB test perplexity.
Then, on BBC News (1489/212/426 articles): ELMo (scalar mix), the random-init control (the same
biLM untrained, the same classifier), layer 0 only and two bag-of-words baselines, each over
--seeds, and the linear probe (logistic regression on pooled layers) of the trained and of the
untrained biLM: the classifier says how well the layers serve the task, the probe pair what
pretraining put into them. Then the same again label-scarce (--few-labels of each topic's
training articles, 0.1: 148; the same dev and test), where the untrained biLM's random spelling
hash has too few examples to learn from and pretraining pays off. Equivalent to

  elmo-dist pretrain --preset tiny --softmax adaptive --optimizer adam --lr 2e-3 --max-minutes M
      --corpus RUN/corpus/train.txt --valid RUN/corpus/dev.txt --min-count 2
  elmo-dist evaluate RUN --corpus RUN/corpus/test.txt
  elmo-dist classify --run-dir RUN --mode scalar-mix --baselines --seeds 0 1 2 --text-style ptb
      --max-tokens 64 --only scalar-mix layer0 random-init bow bow-sklearn probe probe-random-init
  (the same classify with --train-fraction 0.1 --out RUN/classify-bbc-news-few-labels)

Each article is cut to its first --classify-tokens tokens (the title and the first sentence or
two), in the style the biLM learned from (lower case, numbers as N, no punctuation).
"""

SEEDS = ["0", "1", "2"]


def build_parser():
    p = parser("elmo-dist demo", DESCRIPTION)
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run directory (must not hold a run yet)")
    p.add_argument("--minutes", type=float, default=4.0, help="pretraining time budget")
    p.add_argument("--corpus", default="bbc", choices=["bbc", "ptb"],
                   help="pretraining text: bbc (BBC News train+dev articles, unlabelled) or ptb (Penn Treebank)")
    p.add_argument("--classify-tokens", type=int, default=64, help="tokens per BBC article for the classifier")
    p.add_argument("--seeds", nargs="+", default=SEEDS, help="classifier seeds (mean and std over them)")
    p.add_argument("--few-labels", type=float, default=0.1,
                   help="fraction of the training labels of the label-scarce stage (0: skip that stage)")
    p.add_argument("--no-classify", action="store_true", help="stop after the perplexities (no BBC News stage)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def pretrain_args(run_dir: Path, corpus: str) -> list:
    """`elmo-dist pretrain` flags of the demo biLM, budget aside. Adam at 2e-3 and the adaptive
    softmax: in a few CPU minutes Adam reaches a lower perplexity than Adagrad, and the adaptive
    softmax doubled the tiny step's tokens/s over the full one at BBC's 18k words."""
    args = ["--run-dir", str(run_dir), "--preset", "tiny", "--softmax", "adaptive", "--optimizer", "adam",
            "--lr", "2e-3", "--batch-size", "32"]
    if corpus == "bbc":
        data = run_dir / "corpus"
        args += ["--corpus", str(data / "train.txt"), "--valid", str(data / "dev.txt"), "--min-count", "2"]
    return args


def write_corpus(run_dir: Path, corpus: str, say=print) -> Optional[Path]:
    """BBC News' train+dev article text into RUN/corpus/ (the classify split); the test text's path."""
    if corpus != "bbc":
        return None
    from elmo_dist.classify.bbc import load_bbc
    from elmo_dist.classify.corpus import write_pretraining_text
    written = write_pretraining_text(load_bbc(), run_dir / "corpus")
    n = written["tokens"]
    say(f"pretraining text: BBC News train+dev articles, {n['train']:,} + {n['dev']:,} tokens "
        f"(test articles, {n['test']:,} tokens, held out) in {run_dir / 'corpus'}")
    return written["test"]


def classify_args(run_dir: Path, out: Path, tokens: int, seeds: list) -> list:
    """`elmo-dist classify` flags of the demo's BBC News stage (the recipe is classify's defaults)."""
    return ["--run-dir", str(run_dir), "--out", str(out), "--mode", "scalar-mix", "--baselines",
            "--text-style", "ptb", "--max-tokens", str(tokens), "--seeds", *[str(s) for s in seeds]]


DEMO_MODELS = ["scalar-mix", "layer0", "random-init", "bow", "bow-sklearn", "probe", "probe-random-init"]
"""The demo's rows; ELMo + bag of words (`classify --baselines`) is measured in the curve benchmark,
to keep the demo near 10 minutes on 2 cores."""


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from . import classify, evaluate, pretrain
        from .paths import check_output_dir
        check_output_dir(args.run_dir, "--run-dir")
        if not 0.0 <= args.few_labels < 1.0:  # checked before the minutes of pretraining, not after
            raise ValueError(f"--few-labels must be in [0, 1) (0 skips the label-scarce stage); got {args.few_labels}")
        if (args.run_dir / "config.json").exists():
            raise FileExistsError(f"--run-dir {args.run_dir} already holds a run; choose another --run-dir")
        quiet = ["--no-progress"] if args.no_progress else []
        test_text = write_corpus(args.run_dir, args.corpus)
        code = pretrain.main([*pretrain_args(args.run_dir, args.corpus), "--max-minutes", str(args.minutes),
                              "--eval-every", "0", "--checkpoint-every", "200", *quiet])
        if code:
            return code
        corpus = ["--corpus", str(test_text)] if test_text else []
        code = evaluate.main([str(args.run_dir), *corpus, "--out", str(args.run_dir / "test_perplexity.json"), *quiet])
        if code or args.no_classify:
            return code
        stages = [("classify-bbc-news", 1.0)] + ([("classify-bbc-news-few-labels", args.few_labels)]
                                                 if args.few_labels else [])
        for out, fraction in stages:
            if fraction < 1.0:
                print(f"\nlabel-scarce: {fraction:g} of each topic's training articles, the same dev and test")
            code = classify.main([*classify_args(args.run_dir, args.run_dir / out, args.classify_tokens, args.seeds),
                                  "--only", *DEMO_MODELS, "--train-fraction", str(fraction), *quiet])
            if code:
                return code
        return 0

    return run_guarded("elmo-dist demo", run)
