"""The pretraining-compute curve: BBC News test accuracy of ELMo layers against pretraining budget.

One biLM (the demo's recipe: ``elmo-dist demo``'s pretrain flags, BBC News train+dev text) is
trained in stages; after each budget its checkpoint gives a held-out perplexity (BBC dev text,
a full pass) and goes through the demo's classifier (classify's defaults, ``--seeds``): ELMo
(scalar mix) and layer 0 only (equal weights, 0.79 against the scalar mix's 0.92 at 2 CPU-minutes
in a first try, was left out to fit the run time), and the linear probe (deterministic: one run).
Budget 0 is the random-init control (the trainer's seeded initialisation through the same
classifier, and through the probe); the bag-of-words baselines and ELMo + bag of words do not
depend on the budget and run once, beside it. Every stage is classified twice: with all 1,489
training articles, and label-scarce, with ``--few-labels`` of them (0.1: 148 articles; the same
dev and test), where the random character hash has too few examples to learn word detectors from
and the pretrained layers pay off. A model or setting added after a stage ran is trained on that
stage's kept checkpoint on the next run (``backfill``).

Budgets are CPU-minutes: core-minutes of training on this machine (``--cores``, 2 here), so 64
CPU-minutes are 32 minutes of a 2-thread run. Each budget is turned into optimizer steps with
``--steps-per-minute`` (wall-clock steps per minute of the 2-thread run on an idle machine,
e.g. from the demo's summary.json: step / train_minutes), so that the figures do not depend on
what else the machine did while the curve ran; the wall minutes each stage took are recorded.

    python benchmarks/pretrain_curve.py --steps-per-minute 258 --fusion-at 64 [--runs-dir runs/curve]

(258: the demo's 1,031 steps in 4 minutes on an idle 2-core Xeon.) Resumable: every finished
stage is recorded by its steps in RUNS/curve_state.json and skipped on a rerun, and the
CPU-minutes of every stage are computed from its steps and the --steps-per-minute given last
(the biLM resumes from its checkpoint: ``pretrain --resume`` continues exactly). Results (with
provenance) go to benchmarks/results/cpu/pretrain_curve.json; ``python -m benchmarks.report``
plots them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/pretrain_curve.py` from a checkout
    sys.path.insert(0, str(REPO))

CURVE_MODELS = ["scalar-mix", "layer0", "probe"]
"""Trained at every budget > 0."""
FIXED_MODELS = ["random-init", "bow", "bow-sklearn", "elmo+bow", "probe-random-init"]
"""Trained once (at the first budget's checkpoint for elmo+bow, which needs a biLM)."""
CONTROLS = {"scalar-mix": "random-init", "probe": "probe-random-init"}
"""Budget 0 of a curve model: its random-init control."""
FEW_FIXED_MODELS = ["random-init", "bow", "bow-sklearn", "probe-random-init"]
"""The label-scarce setting's budget-independent models (no elmo+bow)."""
SETTINGS = {"summary": ("classify", 1.0, FIXED_MODELS), "few_labels": ("classify-few", None, FEW_FIXED_MODELS)}
"""Per stage key: (classify run directory under RUNS, training-label fraction (None: --few-labels),
budget-independent models, trained at the first stage)."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/curve"), help="biLM run, classifier runs, state")
    p.add_argument("--cpu-minutes", type=float, nargs="+", default=[2, 4, 8, 16, 32, 64],
                   help="budgets after 0 (the random-init control), increasing")
    p.add_argument("--cores", type=int, default=2, help="cores the pretraining uses (CPU-minutes per wall minute)")
    p.add_argument("--steps-per-minute", type=float, required=True,
                   help="optimizer steps per wall minute of the 2-thread run on an idle machine")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="classifier seeds")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu" / "pretrain_curve.json",
                   help="JSON results path")
    p.add_argument("--fusion-at", type=float, default=None,
                   help="also train ELMo + bag of words (with the bow baseline it starts from) on this budget's "
                        "biLM (default: the first budget's, trained with the fixed models)")
    p.add_argument("--few-labels", type=float, default=0.1,
                   help="the label-scarce setting: this fraction of each class's training articles "
                        "(classify --train-fraction), the same dev and test")
    p.add_argument("--report-only", action="store_true",
                   help="no pretraining: classify what the recorded stages lack (backfill), relabel their "
                        "CPU-minutes with --steps-per-minute and rewrite the results")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def load_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def save_state(path: Path, state: dict) -> None:
    from elmo_dist.utils import atomic_write_text
    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def train_to(run_dir: Path, steps: int, progress: bool) -> dict:
    """Pretrains (or resumes) the demo biLM until ``steps``; returns its summary.json."""
    from elmo_dist.cli import demo, pretrain
    quiet = [] if progress else ["--no-progress"]
    if (run_dir / "config.json").exists():
        argv = ["--run-dir", str(run_dir), "--resume", "--max-steps", str(steps)]
    else:
        demo.write_corpus(run_dir, "bbc")
        argv = [*demo.pretrain_args(run_dir, "bbc"), "--max-steps", str(steps), "--eval-every", "0",
                "--checkpoint-every", "0", "--keep-checkpoints", "100", "--wandb", "disabled"]
    if pretrain.main([*argv, *quiet]):
        raise RuntimeError(f"pretraining to step {steps} failed; see the messages above")
    return json.loads((run_dir / "summary.json").read_text())


def classify(run_dir: Path, checkpoint, out: Path, models: list, seeds: list, progress: bool,
             train_fraction: float = 1.0) -> dict:
    """The demo's classifier stage on one checkpoint, only ``models``; returns results.json's summary."""
    from elmo_dist.classify import run_classify
    from elmo_dist.cli import classify as classify_cli
    from elmo_dist.cli import demo
    args = classify_cli.build_parser().parse_args(
        [*demo.classify_args(run_dir, out, 64, seeds), "--only", *models, "--wandb-mode", "disabled",
         "--train-fraction", str(train_fraction)])
    cfg = classify_cli.config_from_args(args)

    cfg.checkpoint = str(checkpoint) if checkpoint else None
    results = run_classify(cfg, progress=progress)
    return {"summary": results["summary"],  # runs that a cap (epochs, lbfgs iterations) may have cut short:
            "stopped_while_rising": [f"{r['model']} seed {r['seed']}" for r in results["runs"]
                                     if r.get("stopped_while_rising") or r.get("converged") is False]}


def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmarks.conftest import provenance
    runs = args.runs_dir
    run_dir, state_path = runs / "bilm", runs / "curve_state.json"
    runs.mkdir(parents=True, exist_ok=True)
    state = load_state(state_path)
    budgets = [] if args.report_only else sorted(args.cpu_minutes)
    for budget in budgets:
        steps = round(args.steps_per_minute * budget / args.cores)
        key = str(steps)  # stages are kept by steps: a rerun with another --steps-per-minute adds to them
        if key in state["stages"]:
            continue
        done = max((s["steps"] for s in state["stages"].values()), default=0)
        if steps < done:  # the biLM cannot go back: resuming would measure step `done` under this label
            print(f"curve: skipped {budget:g} CPU-minutes ({steps} steps): the biLM in {run_dir} is already at "
                  f"step {done}; measure it in a new --runs-dir", flush=True)
            continue
        t0 = time.time()
        summary = train_to(run_dir, steps, not args.no_progress)
        wall = time.time() - t0
        state["stages"][key] = {"cpu_minutes": budget, "steps": summary["step"], "tokens_seen": summary["tokens_seen"],
                                "pretrain_wall_s": wall, "valid": summary.get("valid"),
                                "untrained_valid": summary.get("untrained_valid"), "summary": {},
                                "stopped_while_rising": []}
        print(f"curve: {budget:g} CPU-minutes ({summary['step']} steps): valid ppl {summary['valid']['ppl']:.1f}",
              flush=True)
        backfill(state, state_path, run_dir, runs, args)  # classifies the new stage, in both settings
    backfill(state, state_path, run_dir, runs, args)
    if args.fusion_at is not None and state.get("fusion", {}).get("cpu_minutes") != args.fusion_at:
        steps = args.steps_per_minute * args.fusion_at / args.cores
        stage = min(state["stages"].values(), key=lambda s: abs(s["steps"] - steps))  # labels are rounded
        if abs(stage["steps"] - steps) > 0.02 * steps:
            raise ValueError(f"--fusion-at {args.fusion_at:g}: no stage near {steps:.0f} steps; give one of the "
                             "budgets in the results")
        checkpoint = run_dir / "checkpoints" / f"step-{stage['steps']:08d}"
        result = classify(run_dir, checkpoint, runs / "classify-fusion", ["bow", "elmo+bow"], args.seeds,
                          not args.no_progress)
        state["fusion"] = {"cpu_minutes": args.fusion_at, "steps": stage["steps"], **result}
        save_state(state_path, state)
    write_results(args, state, provenance())
    return 0


def backfill(state: dict, state_path: Path, run_dir: Path, runs: Path, args) -> None:
    """Trains, on each stage's kept checkpoint, every model of every setting (SETTINGS) that the
    stage lacks: a new stage's, and those added to the lists after a stage ran (the linear probe,
    the label-scarce setting), so every stage has every row."""
    first = min(state["stages"].values(), key=lambda s: s["steps"], default=None)
    for stage in sorted(state["stages"].values(), key=lambda s: s["steps"]):
        for key, (out, fraction, fixed) in SETTINGS.items():
            record = stage if key == "summary" else stage.setdefault(key, {"summary": {}, "stopped_while_rising": []})
            wanted = CURVE_MODELS + (fixed if stage is first else [])
            missing = [m for m in wanted if m not in record["summary"]]
            if not missing:
                continue
            checkpoint = run_dir / "checkpoints" / f"step-{stage['steps']:08d}"
            result = classify(run_dir, checkpoint, runs / out, missing, args.seeds, not args.no_progress,
                              args.few_labels if fraction is None else fraction)
            record["summary"].update(result["summary"])
            record["stopped_while_rising"] += result["stopped_while_rising"]
            save_state(state_path, state)
            print(f"curve: {stage['steps']} steps, {key}: " + ", ".join(
                f"{m} {result['summary'][m]['test_accuracy']:.3f}" for m in missing), flush=True)


def _points(stages: list, fixed: dict, untrained_ppl: float, key: str) -> list:
    """Budget 0 (the controls) and one point per stage: test accuracy (mean, std over seeds) and
    dev accuracy of CURVE_MODELS in setting ``key`` (SETTINGS)."""
    at = lambda s: s if key == "summary" else s[key]  # noqa: E731
    points = [{"cpu_minutes": 0, "steps": 0, "valid_ppl": untrained_ppl,
               **{k: {m: fixed[c][k] for m, c in CONTROLS.items()} for k in ("test_accuracy", "test_accuracy_std")}}]
    for s in stages:
        summary = at(s)["summary"]
        points.append({"cpu_minutes": s["cpu_minutes"], "steps": s["steps"], "tokens_seen": s["tokens_seen"],
                       "valid_ppl": s["valid"]["ppl"], "pretrain_wall_s": s["pretrain_wall_s"],
                       **{k: {m: summary[m][k] for m in CURVE_MODELS}
                          for k in ("test_accuracy", "test_accuracy_std", "dev_accuracy")},
                       "stopped_while_rising": at(s)["stopped_while_rising"]})
    return points


def _baselines(fixed: dict, models: list) -> dict:
    return {m: {k: fixed[m][k] for k in ("test_accuracy", "test_accuracy_std", "dev_accuracy")} for m in models}


def write_results(args, state: dict, prov: dict) -> None:
    from elmo_dist.utils import atomic_write_text
    stages = sorted(state["stages"].values(), key=lambda s: s["steps"])
    for s in stages:  # CPU-minutes from the steps and the idle rate given now
        s["cpu_minutes"] = round(s["steps"] * args.cores / args.steps_per_minute, 1)
    untrained_ppl = stages[0]["untrained_valid"]["ppl"]
    fixed, few_fixed = stages[0]["summary"], stages[0]["few_labels"]["summary"]
    points = _points(stages, fixed, untrained_ppl, "summary")
    prov["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    fusion = state.get("fusion")
    if fusion:  # ELMo + bag of words (and the bow runs it started from) on a later biLM
        fixed = {**fixed, **fusion["summary"]}
        fusion["cpu_minutes"] = round(fusion["steps"] * args.cores / args.steps_per_minute, 1)
    from elmo_dist.classify.pipeline import ClassifyConfig
    payload = {
        "benchmark": "pretrain_curve", "provenance": prov,
        "setup": {"recipe": "elmo-dist demo (tiny, adaptive softmax, Adam 2e-3, batch 32 x 20, BBC train+dev text)",
                  "classifier": "elmo-dist classify defaults, 64 tokens, ptb style", "seeds": args.seeds,
                  "mix_lr_scale": ClassifyConfig.mix_lr_scale,
                  "cores": args.cores, "steps_per_minute": args.steps_per_minute,
                  "held_out": "BBC News dev article text (perplexity); BBC News test articles (accuracy)"},
        "points": points,
        "baselines": _baselines(fixed, FIXED_MODELS),
        "elmo_plus_bow_at_cpu_minutes": fusion["cpu_minutes"] if fusion else stages[0]["cpu_minutes"],
        "few_labels": {"train_fraction": args.few_labels,
                       "points": _points(stages, few_fixed, untrained_ppl, "few_labels"),
                       "baselines": _baselines(few_fixed, FEW_FIXED_MODELS)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
