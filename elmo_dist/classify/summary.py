"""Results over runs: per-model mean and std over seeds, what pretraining adds, the summary table."""
from __future__ import annotations

import statistics
from typing import Optional

from .runs import CONTROL, PROBE, PROBE_CONTROL, fmt

MODEL_TITLES = {"scalar-mix": "ELMo, scalar mix", "equal": "ELMo, equal weights",
                "learned": "ELMo, learned (attention)", "elmo+bow": "ELMo + bag of words",
                "layer0": "baseline: layer 0 only", CONTROL: "control: random-init biLM",
                "bow": "baseline: bag of words",
                "bow-sklearn": "baseline: TF-IDF + logistic regression (scikit-learn)",
                PROBE: "linear probe: pooled layers + logistic regression",
                PROBE_CONTROL: "linear probe of the random-init biLM"}


def summarise(runs: list) -> dict:
    """Per model: mean and standard deviation over seeds of test accuracy and macro-F1 (std 0
    for a model run once, e.g. the deterministic bow-sklearn, which is marked ``deterministic``)."""
    out: dict = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        entry = {"seeds": len(rs), "baseline": rs[0]["baseline"]}
        if rs[0].get("deterministic"):
            entry["deterministic"] = True
        for key in ("accuracy", "macro_f1"):
            values = [r["test"][key] for r in rs]
            entry[f"test_{key}"] = statistics.fmean(values)
            entry[f"test_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["dev_accuracy"] = statistics.fmean(r["dev"]["accuracy"] for r in rs)
        if rs[0]["layer_weights"]:
            entry["layer_weights"] = [statistics.fmean(w) for w in zip(*(r["layer_weights"] for r in rs))]
        out[name] = entry
    return out


def pretraining_gain(summary: dict, main: str, control: str = CONTROL) -> Optional[dict]:
    """What pretraining adds: ``main``'s mean test accuracy and macro-F1 minus ``control``'s (the
    same classifier, same seeds, on the untrained biLM's layers), as fractions; None without both."""
    if control not in summary or main not in summary:
        return None
    return {"model": main, "control": control,
            **{k: summary[main][k] - summary[control][k] for k in ("test_accuracy", "test_macro_f1")}}


def gain_lines(results: dict) -> list:
    """What pretraining adds, in percentage points: one line for the main model and one for the
    linear probe, each when its control ran."""
    lines = []
    for key, what in (("pretraining_gain", "same classifier on the untrained biLM"),
                      ("probe_gain", "what a linear reader finds in the layers")):
        gain = results.get(key)
        if gain:
            lines.append(f"pretraining gain ({gain['model']} minus {gain['control']}, {what}): "
                         f"{100 * gain['test_accuracy']:+.1f} points test accuracy, "
                         f"{100 * gain['test_macro_f1']:+.1f} points macro-F1")
    return lines


def summary_table(results: dict) -> str:
    """The summary as aligned text: model, test accuracy, macro-F1 (mean +- std over seeds), weights."""
    rows = [("model", "test acc", "macro-F1", "dev acc", "layer weights")]
    for name, s in results["summary"].items():
        pm = lambda k: f"{s[k]:.4f}" + (f" +-{s[k + '_std']:.4f}" if s["seeds"] > 1 else "")  # noqa: E731
        rows.append((MODEL_TITLES.get(name, name), pm("test_accuracy"), pm("test_macro_f1"), f"{s['dev_accuracy']:.4f}",
                     fmt(s["layer_weights"]) if s.get("layer_weights") else "-"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
