"""elmo-dist evaluate: perplexity of a trained run on a corpus."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .common import add_threads, apply_threads, parser, run_guarded

DESCRIPTION = """\
Forward, backward and average perplexity of a run's latest valid checkpoint on a corpus
(default: the Penn Treebank test split). The LSTM state is carried along each batch row,
as in training; each sentence counts its words plus one boundary token per direction.
"""


def build_parser():
    p = parser("elmo-dist evaluate", DESCRIPTION)
    p.add_argument("run_dir", type=Path, help="run directory made by `elmo-dist pretrain`")
    p.add_argument("--corpus", nargs="+", default=None, help="files, directories or globs; default: PTB test")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: the run's)")
    p.add_argument("--num-steps", type=int, default=None, help="window length (default: the run's)")
    p.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint directory (default: the latest valid)")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads(p)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        apply_threads(args.threads)
        from elmo_dist.runs import load_run
        from elmo_dist.train import evaluate_perplexity
        from elmo_dist.train.rundir import make_corpus, ptb_test_path, run_inputs
        from elmo_dist.utils import atomic_write_json, pick_device

        from .paths import check_output_file
        specs = args.corpus or [str(ptb_test_path())]
        model, cfg, vocab = load_run(args.run_dir, args.checkpoint)
        corpus = make_corpus(specs, cfg.data)
        check_output_file(args.out, "--out", [("a corpus file", f) for f in corpus.files + corpus.binary_files]
                          + run_inputs(args.run_dir))
        device = pick_device()
        model.to(device)
        result = evaluate_perplexity(model, corpus, vocab, args.batch_size or cfg.train.batch_size,
                                     args.num_steps or cfg.train.num_steps, progress=not args.no_progress,
                                     device=device)
        result["corpus"] = specs
        print(f"perplexity on {', '.join(map(str, specs))}: forward {result['ppl_fwd']:.2f}  "
              f"backward {result['ppl_bwd']:.2f}  average {result['ppl']:.2f}  "
              f"({result['targets_fwd']} targets per direction)")
        if args.out:
            atomic_write_json(args.out, result)
        else:
            print(json.dumps(result, sort_keys=True))
        return 0

    return run_guarded("elmo-dist evaluate", run)
