"""The pretraining-compute curve's part of the benchmark report: a table and a plot of
benchmarks/results/cpu/pretrain_curve.json (written by benchmarks/pretrain_curve.py)."""
from __future__ import annotations

from pathlib import Path

CURVE_TITLES = {"scalar-mix": "ELMo, scalar mix", "layer0": "layer 0 only", "probe": "linear probe"}
CONTROLS = {"scalar-mix": "random-init", "probe": "probe-random-init"}
"""A curve row and the control it must beat by 5 points."""


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _table_rows(points: list, models: list) -> list:
    rows = []
    for p in points:
        acc, std = p["test_accuracy"], p["test_accuracy_std"]
        cells = [(_pm(acc[m], std[m]) if std.get(m) else f"{acc[m]:.3f}") if m in acc else "-" for m in models]
        rows.append([f"{p['cpu_minutes']:g}", p["steps"], f"{p['valid_ppl']:.0f}", *cells,
                     ", ".join(p.get("stopped_while_rising") or []) or "none"])
    return rows


def _crossings(points: list, base: dict) -> list:
    """One line per curve row with a control: the first budget where it reaches control + 5 points."""
    lines = []
    for m, c in CONTROLS.items():
        if c not in base:
            continue
        bar = base[c]["test_accuracy"] + 0.05
        crossed = next((p["cpu_minutes"] for p in points[1:] if p["test_accuracy"].get(m, 0.0) >= bar), None)
        lines += [f"- {CURVE_TITLES[m]} reaches its control ({c}) + 5 points ({bar:.3f}): "
                  + (f"at {crossed:g} CPU-minutes." if crossed is not None else "not within these budgets.")]
    return lines + [""]


def curve_section(payload: dict, table) -> tuple[list[str], list[list]]:
    """(markdown lines, summary rows): accuracy and perplexity per budget, the baselines, where
    each curve row crosses its random-init control + 5 points; all labels, then label-scarce."""
    points, base = payload["points"], payload["baselines"]
    setup = payload.get("setup", {})
    control = base["random-init"]["test_accuracy"]
    models = list(CURVE_TITLES)
    head = ["CPU-minutes", "steps", "valid ppl", *[CURVE_TITLES[m] for m in models], "runs whose best epoch was the cap"]
    scale = setup.get("mix_lr_scale", 1)  # files written before classify --mix-lr-scale trained the mix at 1x
    lines = [f"Recipe: {setup.get('recipe')}; classifier: {setup.get('classifier')}, the scalar mix's weights at "
             f"{scale:g}x the learning rate; seeds {setup.get('seeds')}. "
             f"Budget 0 is the random-init control (the trainer's seeded initialisation). CPU-minutes are "
             f"core-minutes: {setup.get('cores')} cores, so 64 CPU-minutes are "
             f"{64 / max(setup.get('cores', 1), 1):g} minutes of training; each budget is "
             f"{setup.get('steps_per_minute'):g} steps per wall minute (the idle 2-thread rate). Held out: "
             f"{setup.get('held_out')}. The linear probe is deterministic (one run, no std).", "",
             "All 1,489 training articles:", ""]
    lines += table(head, _table_rows(points, models))
    lines += table(["baseline (budget-independent)", "test accuracy", "dev accuracy"],
                   [[m, _pm(v["test_accuracy"], v["test_accuracy_std"]), f"{v['dev_accuracy']:.3f}"]
                    for m, v in base.items()])
    lines += [f"ELMo + bag of words was measured on the {payload.get('elmo_plus_bow_at_cpu_minutes'):g}-CPU-minute "
              f"biLM.", ""] + _crossings(points, base)
    final = points[-1]
    summary = [[f"BBC test accuracy after {final['cpu_minutes']:g} CPU-minutes of pretraining (mix lr {scale:g}x)",
                f"{final['test_accuracy']['scalar-mix']:.3f}",
                f"{100 * (final['test_accuracy']['scalar-mix'] - control):+.1f} "
                "points over the random-init control", f"bag of words {base['bow']['test_accuracy']:.3f}"]]
    few = payload.get("few_labels")
    if few:
        fp, fb = few["points"], few["baselines"]
        lines += [f"Label-scarce: {few['train_fraction']:g} of each class's training articles, the same dev and "
                  "test:", ""]
        lines += table(head, _table_rows(fp, models))
        lines += table(["baseline (budget-independent)", "test accuracy", "dev accuracy"],
                       [[m, _pm(v["test_accuracy"], v["test_accuracy_std"]), f"{v['dev_accuracy']:.3f}"]
                        for m, v in fb.items()])
        lines += _crossings(fp, fb)
        summary.append([f"... with {few['train_fraction']:g} of the training labels",
                        f"{fp[-1]['test_accuracy']['scalar-mix']:.3f}",
                        f"{100 * (fp[-1]['test_accuracy']['scalar-mix'] - fb['random-init']['test_accuracy']):+.1f} "
                        "points over the random-init control", f"bag of words {fb['bow']['test_accuracy']:.3f}"])
    return lines, summary


def _panel(ax, points: list, base: dict, title: str) -> None:
    """One setting: test accuracy (mean ± std) per curve row against CPU-minutes (log-2 axis after
    0), the budget-independent baselines as horizontal lines, held-out perplexity on a second axis."""
    x = [0.5 if p["cpu_minutes"] == 0 else p["cpu_minutes"] for p in points]
    for i, (m, label) in enumerate(CURVE_TITLES.items()):
        have = [(xi, p) for xi, p in zip(x, points) if m in p["test_accuracy"]]
        ax.errorbar([xi for xi, _ in have], [p["test_accuracy"][m] for _, p in have],
                    yerr=[p["test_accuracy_std"].get(m, 0.0) for _, p in have], marker="o", ms=4, capsize=3,
                    color=f"C{i}", label=label)
    for j, (m, style) in enumerate((("random-init", ":"), ("bow", "--"), ("elmo+bow", "-."),
                                    ("probe-random-init", (0, (1, 3))))):
        if m in base:
            ax.axhline(base[m]["test_accuracy"], ls=style, color=f"C{j + 3}", lw=1, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, ["0" if p["cpu_minutes"] == 0 else f"{p['cpu_minutes']:g}" for p in points], fontsize=7, rotation=45)
    ax.set_xlabel("pretraining CPU-minutes (2 cores; 0 = random init)")
    ax.set_ylabel("BBC News test accuracy")
    ax.set_title(title, fontsize=9)
    ppl = ax.twinx()
    ppl.plot(x, [p["valid_ppl"] for p in points], color="grey", lw=0.8, marker="x")
    ppl.set_yscale("log")
    ppl.set_ylabel("held-out perplexity (grey)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")


def plot_curve(payload: dict, out: Path, plt) -> Path:
    """The curve: all training labels, and (when measured) the label-scarce setting beside it."""
    few = payload.get("few_labels")
    fig, axes = plt.subplots(1, 2 if few else 1, figsize=(13, 4.4) if few else (7.5, 4.2), squeeze=False)
    _panel(axes[0][0], payload["points"], payload["baselines"], "All 1,489 training articles")
    if few:
        _panel(axes[0][1], few["points"], few["baselines"],
               f"{few['train_fraction']:g} of the training articles (label-scarce)")
    fig.suptitle("What pretraining adds downstream, by pretraining compute", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
