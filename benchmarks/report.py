"""Render benchmarks/results/<cpu|gpu>/*.json as one markdown report with PNG plots.

    python -m benchmarks.report [--results benchmarks/results] [--out REPORT.md]

Ratios against the baseline of each comparison come first (a one-table summary per device
kind), then one section per benchmark; CPU and GPU results are kept apart. Absolute times are
shown for GPU results only: on a shared CPU box only ratios measured side by side mean much
(the JSON files keep every figure). Plots go to <results>/plots/<kind>_<benchmark>.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 2 ** 20


def load(results: Path) -> dict[str, dict[str, dict]]:
    """{kind: {file stem: payload}} for kind in cpu, gpu; unreadable files are skipped with a note."""
    out: dict[str, dict[str, dict]] = {}
    for kind in ("cpu", "gpu"):
        for path in sorted((results / kind).glob("*.json")):
            try:
                out.setdefault(kind, {})[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                print(f"report: skipping {path}: {e}", file=sys.stderr)
    return out


def rows_of(payload: dict) -> list[dict]:
    """The rows of a pytest-benchmark results file (conftest format), group name included."""
    return [{**row, "group": group} for group, rows in payload.get("groups", {}).items() for row in rows]


def fmt_x(value) -> str:
    return f"x{value:.2f}" if isinstance(value, (int, float)) else "-"


def fmt_mib(value) -> str:
    return f"{value / MiB:,.0f} MiB" if isinstance(value, (int, float)) else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def budget(setup: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in (setup.get("budget") or {}).items()) or "?"


def prov_line(payload: dict) -> str:
    p = payload.get("provenance", {})
    versions = p.get("versions") or {k: p.get(k) for k in ("torch", "triton") if p.get(k)}
    v = ", ".join(f"{k} {val}" for k, val in versions.items() if val)
    threads = p.get("torch_threads", p.get("threads"))
    device = p.get("device", "?")
    if device == "cpu":
        device = f"cpu: {p.get('cpu', '?')}, {p.get('cpu_count', '?')} cores"
    return (f"_{device}; {v}; threads {threads}; commit {p.get('commit') or p.get('git_commit')}; "
            f"{p.get('date')}; `{p.get('command')}`_")


# ----------------------------------------------------------------------------------- sections
def softmax_section(payload: dict, gpu: bool) -> tuple[list[str], list[list]]:
    lines, summary = [], []
    head = ["vocab", "variant", "x vs full", "x vs torch adaptive", "peak memory", "memory vs full", "logits block"]
    if gpu:
        head.insert(2, "ms")
    body = []
    for row in rows_of(payload):
        for name, v in row.get("variants", {}).items():
            ok = v.get("status") == "ok"
            status = v.get("status", "-")
            cells = [f"{row['vocab']:,}", name,
                     fmt_x(v.get("speedup_vs_baseline")) if ok else status[:70] + ("..." if len(status) > 70 else ""),
                     fmt_x(v.get("speedup_vs_torch_adaptive")) if ok else "-",
                     fmt_mib(v.get("peak_bytes")) if ok else f"(needs ~{fmt_mib(v.get('estimated_peak_bytes'))})"
                     if v.get("estimated_peak_bytes") else "-",
                     fmt_x(v.get("memory_ratio_vs_full")) if ok else "-", fmt_mib(v.get("logits_bytes"))]
            if gpu:
                cells.insert(2, f"{v['median_s'] * 1e3:.1f}" if ok else "-")
            body.append(cells)
        ours = row.get("variants", {}).get("adaptive", {})
        if ours.get("status") == "ok":
            summary.append([f"softmax fwd+bwd, {row['vocab']:,} words", "adaptive",
                            fmt_x(ours.get("speedup_vs_baseline")) + " vs full" if "speedup_vs_baseline" in ours
                            else "full: " + row["variants"].get("full", {}).get("status", "-"),
                            fmt_x(ours.get("speedup_vs_torch_adaptive")) + " vs torch adaptive; memory "
                            + fmt_mib(ours.get("peak_bytes"))])
    rows = rows_of(payload)
    first = max(rows, key=lambda r: len(r.get("cutoffs", []))) if rows else {}
    lines.append(f"{first.get('tokens', '?')} tokens, P = {first.get('dim', '?')}, cutoffs "
                 f"{first.get('cutoffs', '?')} (those >= V dropped), div {first.get('div_value', '?')}, "
                 f"Zipf({first.get('zipf_s', '?')}) targets. Peak memory: live tensor bytes during one "
                 "forward+backward; logits block: the variant's fp32 (tokens x classes) blocks, once each.")
    lines.append("")
    return lines + table(head, body), summary


def lstm_section(payload: dict, gpu: bool) -> tuple[list[str], list[list]]:
    body, summary = [], []
    for row in rows_of(payload):
        body.append([row["group"], row["name"], fmt_x(row.get("speedup_vs_baseline")), row.get("baseline", "-"),
                     "yes" if row.get("clip") else "no"] + ([f"{row['median_s'] * 1e3:.1f}"] if gpu else []))
        if "torch_fused" in row["name"]:
            summary.append([f"LSTMP layer fwd+bwd, {row['group']}", "torch path (clips)",
                            fmt_x(row.get("speedup_vs_baseline")) + " vs nn.LSTM(proj_size)", ""])
    head = ["group", "variant", "x vs baseline", "baseline", "clips"] + (["ms"] if gpu else [])
    return table(head, body), summary


def train_section(payload: dict, gpu: bool) -> tuple[list[str], list[list]]:
    body, summary = [], []
    for row in rows_of(payload):
        frac = row.get("fraction_of_peak")
        body.append([row.get("preset", row["name"]), f"{row.get('gflop_per_s', 0):.1f}",
                     f"{row.get('peak_gflop_per_s', 0):.1f}" if row.get("peak_gflop_per_s") else "-",
                     f"{100 * frac:.1f}%" if frac is not None else "-", f"{row.get('params_millions', 0):.1f}M"]
                    + ([f"{row.get('tokens_per_s', 0):,.0f}"] if gpu else []))
        if frac is not None:
            summary.append([f"training step, {row.get('preset')}", "achieved / measured matmul peak",
                            f"{100 * frac:.1f}%", f"{row.get('gflop_per_s', 0):.1f} of {row['peak_gflop_per_s']:.1f} GFLOP/s"])
    head = ["preset", "achieved GFLOP/s", "peak GFLOP/s (fp32 matmul, same run)", "fraction of peak", "params"]
    return table(head + (["tokens/s"] if gpu else []), body), summary


def data_section(payload: dict, gpu: bool, train: dict | None) -> tuple[list[str], list[list]]:
    body, summary = [], []
    train_rates = {r.get("preset"): r.get("tokens_per_s") for r in rows_of(train)} if train else {}
    for row in rows_of(payload):
        for name, v in row.get("variants", {}).items():
            head_room = {p: v["tokens_per_s"] / t for p, t in train_rates.items() if t}
            body.append([name, fmt_x(v.get("speedup_vs_baseline")),
                         ", ".join(f"{fmt_x(h)} ({p})" for p, h in head_room.items()) or "-"]
                        + ([f"{v['tokens_per_s']:,.0f}"] if gpu else []))
            if name == "batcher":
                summary.append(["data pipeline (tokenize + char ids + windows)", "WindowBatcher",
                                fmt_x(v.get("speedup_vs_baseline")) + " vs allennlp-style",
                                "headroom over the training step: "
                                + (", ".join(f"{fmt_x(h)} ({p})" for p, h in head_room.items()) or "no bench_train result")])
    head = ["variant", "x vs allennlp-style (tokens/s)", "headroom: pipeline / training-step tokens/s"]
    note = ["Headroom above x1 means the pipeline, which runs in the training process, is not the "
            "bottleneck; its cost per step is 1/headroom of the step.", ""]
    return note + table(head + (["tokens/s"] if gpu else []), body), summary


def ppl_section(payload: dict) -> tuple[list[str], list[list]]:
    res = payload["results"]
    full = res["full"]["valid"]["ppl"]
    body = [[k, f"{v.get('adaptive_div_value', '-')}", f"{v['valid']['ppl']:.1f}", fmt_x(v["valid"]["ppl"] / full),
             f"{v['valid']['ppl_fwd']:.1f}", f"{v['valid']['ppl_bwd']:.1f}", v["steps"], f"{v['train_minutes']:.1f}"]
            for k, v in res.items()]
    setup = payload.get("setup", {})
    cutoffs = next((v["adaptive_cutoffs"] for v in res.values() if "adaptive_cutoffs" in v), None)
    lines = [f"{setup.get('preset')} preset on {setup.get('corpus')}, {budget(setup)} per run, "
             f"{setup.get('optimizer')} lr {setup.get('lr')}, batch {setup.get('batch_size')} x "
             f"{setup.get('num_steps')}, seed {setup.get('seed')}; adaptive cutoffs {cutoffs}. Validation "
             "perplexity: a full pass over PTB valid, the average of the two directions.", ""]
    lines += table(["softmax", "div", "valid ppl", "x full", "fwd", "bwd", "steps", "train min"], body)
    summary = [[f"PTB validation perplexity, {budget(setup)}", k, f"x{v['valid']['ppl'] / full:.3f} of full",
                f"{100 * (v['valid']['ppl'] / full - 1):+.1f}%"] for k, v in res.items() if k != "full"]
    return lines, summary


def scaling_section(payload: dict) -> tuple[list[str], list[list]]:
    """Only the ratios of the summary rows (bench_scaling.py belongs to its own suite)."""
    body, summary = [], []
    for r in payload.get("results", []):
        if not r.get("summary"):
            continue
        ratios = {k: v for k, v in r.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and ("efficiency" in k or "speedup" in k
                                                                                 or "ratio" in k)}
        body.append([r.get("preset", "?"), *(f"{k} {fmt_x(v)}" for k, v in ratios.items())])
        if "scaling_efficiency" in r:
            spread = r.get("scaling_efficiency_range")
            summary.append([f"data parallel, {r.get('preset')}", "scaling efficiency",
                            f"{r['scaling_efficiency']:.2f}",
                            f"range {spread[0]:.2f}-{spread[1]:.2f}" if isinstance(spread, list) and len(spread) == 2
                            else ""])
    return [*(f"- {': '.join([b[0], ', '.join(b[1:])])}" for b in body), ""], summary


def embed_section(payload: dict) -> tuple[list[str], list[list]]:
    """bench_embed.py: ratios to the baseline of the same run (AllenNLP 2.10.1's own code when the
    wheel was given, else the re-implementation), and to the issue's absolute AllenNLP figure."""
    res, setup, prov = payload["results"], payload.get("setup", {}), payload.get("provenance", {})
    ref = payload.get("allennlp_reference_tokens_per_s")
    base = payload.get("baseline", "allennlp-style")
    body = [[name, f"{r['tokens_per_s']:,.0f}", fmt_x(r["speedup_vs_baseline"]),
             fmt_x(r["ratio_vs_allennlp_1744"]), f"{r['max_abs_diff_vs_bilm_forward']:.1e}"] for name, r in res.items()]
    load = prov.get("load_average_start")
    lines = [f"{setup.get('preset')} sizes, stateless, {setup.get('batches')} batches of {setup.get('batch_size')} "
             f"PTB sentences of {setup.get('sentence_tokens')} (embedder-stream: "
             f"{setup.get('stream_batches', 0)} batches), {prov.get('threads')} threads, {prov.get('device')}; "
             f"load average at the start {load[0]:.1f}." if load else "", ""]
    lines += table(["variant", "tokens/s", f"x {base} (same run)", f"x {ref:,.0f} (issue's AllenNLP figure)",
                    "max abs diff"], body)
    summary = []
    for name in ("embedder-stream", "embedder-warm"):
        if name in res:
            summary.append([f"ELMo embedding, {setup.get('preset')} sizes, {prov.get('threads')} threads", name,
                            f"{fmt_x(res[name]['speedup_vs_baseline'])} vs {base}",
                            f"{res[name]['tokens_per_s']:,.0f} tokens/s = {fmt_x(res[name]['ratio_vs_allennlp_1744'])} "
                            f"AllenNLP's {ref:,.0f}"])
    return lines, summary


def elmo_frozen_section(payload: dict) -> tuple[list[str], list[list]]:
    """bench_elmo_frozen.py: downstream training steps with a frozen Elmo, the token cache against
    BiLM.forward every batch, epochs interleaved in one run."""
    res, setup, ratios = payload["results"], payload.get("setup", {}), payload["ratios"]
    prov = payload.get("provenance", {})
    body = [[name, f"{r['tokens_per_s_first_epoch']:,.0f}", f"{r['tokens_per_s_later_epochs']:,.0f}"]
            for name, r in res.items()]
    lines = [f"{setup.get('preset')} sizes, frozen and stateless; {setup.get('batches_per_epoch')} batches of "
             f"{setup.get('batch_size')} {setup.get('documents')} cut to {setup.get('max_tokens')} tokens, "
             f"{setup.get('epochs')} epochs a variant; {setup.get('downstream')}; {prov.get('threads')} threads. "
             f"{prov.get('machine_note', '')[:1].upper()}{prov.get('machine_note', '')[1:]}; load average {prov.get('load_average_start', ['?'])[0]:.1f} at the "
             f"start, {prov.get('load_average_end', ['?'])[0]:.1f} at the end. Largest loss difference between the variants "
             f"{payload.get('max_abs_loss_diff', float('nan')):.1e}, layers "
             f"{payload.get('max_abs_layer_diff_first_batch', float('nan')):.1e}.", ""]
    lines += table(["variant", "tokens/s, first epoch", "tokens/s, later epochs (median)"], body)
    lines += [f"Cached vs BiLM.forward: {fmt_x(ratios['speedup_later_epochs'])} once the cache is filled, "
              f"{fmt_x(ratios['speedup_first_epoch'])} on the first epoch, "
              f"{fmt_x(ratios['speedup_all_epochs'])} over all epochs; epoch by epoch "
              + ", ".join(fmt_x(r) for r in ratios.get("speedup_per_epoch", [])) + ".", ""]
    summary = [[f"frozen Elmo downstream training, {setup.get('preset')} sizes, {prov.get('threads')} threads",
                "token cache", f"{fmt_x(ratios['speedup_later_epochs'])} vs BiLM.forward (later epochs)",
                f"first epoch {fmt_x(ratios['speedup_first_epoch'])}; load average "
                f"{prov.get('load_average_start', [float('nan')])[0]:.1f} (2 cores)"]]
    return lines, summary


def bilm_tf_section(payload: dict) -> tuple[list[str], list[list]]:
    """bench_bilm_tf.py: training tokens/s of elmo-dist (full and adaptive softmax) against bilm-tf's
    own train() loop, rounds interleaved in one run; ratios of the medians, per-round range."""
    setup, prov = payload.get("setup", {}), payload.get("provenance", {})
    lines = [f"B = {setup.get('batch_size')}, T = {setup.get('window')}, {setup.get('corpus')} "
             f"({setup.get('vocab_size'):,} words), {setup.get('threads_per_side')} threads a side (TF intra-op "
             f"{setup.get('tf_threads', {}).get('intra_op')}, inter-op {setup.get('tf_threads', {}).get('inter_op')}), "
             f"{setup.get('optimizer')}; bilm-tf: its own train() loop, {setup.get('bilm_tf_softmax')}, "
             f"{setup.get('onednn')}, TensorFlow {prov.get('versions', {}).get('tensorflow')}; elmo-dist: "
             f"`pretrain`'s step (full or adaptive softmax). {setup.get('rounds')} rounds of "
             f"{setup.get('steps_per_round')} steps a variant after {setup.get('warmup_steps')} warm-up steps. "
             f"{prov.get('machine_note', '')[:1].upper()}{prov.get('machine_note', '')[1:]}.", ""]
    body, summary = [], []
    for r in payload["results"]:
        load = f"{r['load_average_start'][0]:.1f} / {r['load_average_end'][0]:.1f}"
        order = ["bilm-tf", "elmo-dist-full", "elmo-dist-adaptive"]
        for name, v in sorted(r["variants"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9):
            t = v["tokens_per_s"]
            per_round = v.get("ratio_vs_bilm_tf_per_round")
            body.append([r["preset"], name, f"{t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f})",
                         fmt_x(v.get("ratio_vs_bilm_tf")) if per_round else "baseline",
                         f"{fmt_x(min(per_round))}-{fmt_x(max(per_round))}" if per_round else "-",
                         f"{v.get('trainable_params', 0) / 1e6:.2f}M", load])
        full, adaptive = r["variants"].get("elmo-dist-full"), r["variants"].get("elmo-dist-adaptive")
        if full and adaptive:
            summary.append([f"training tokens/s, {r['preset']}, {setup.get('threads_per_side')} threads",
                            "elmo-dist, full softmax", f"{fmt_x(full['ratio_vs_bilm_tf'])} vs bilm-tf",
                            f"adaptive softmax {fmt_x(adaptive['ratio_vs_bilm_tf'])}; load average {load}"])
    lines += table(["preset", "variant", "tokens/s, median (min-max)", "x bilm-tf (medians)", "x bilm-tf per round",
                    "trainable params", "load average start / end"], body)
    return lines, summary


def generic_section(payload: dict) -> list[str]:
    rows = rows_of(payload) or payload.get("results", [])
    if isinstance(rows, dict):
        rows = [{"name": k, **v} for k, v in rows.items()]
    lines = []
    for r in rows:
        ratios = {k: v for k, v in r.items() if ("speedup" in k or "ratio" in k) and isinstance(v, (int, float))}
        lines.append(f"- {r.get('name') or r.get('variant') or r.get('group')}: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    return lines + [""]


# ----------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_softmax(payload: dict, out: Path) -> Path:
    plt = _plt()
    from matplotlib.ticker import FormatStrFormatter, NullFormatter
    rows = rows_of(payload)
    names = ["full", "adaptive", "torch-adaptive", "adaptive-bf16"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, speed, mem, est = [], [], [], []
        for j, row in enumerate(rows):
            v = row.get("variants", {}).get(name, {})
            x = j + (i - len(names) / 2 + 0.5) * width
            if v.get("status") == "ok" and v.get("speedup_vs_torch_adaptive"):
                ax_t.bar(x, v["speedup_vs_torch_adaptive"], width, color=f"C{i}", label=name if j == 0 else None)
            if v.get("status") == "ok" and v.get("peak_bytes"):
                ax_m.bar(x, v["peak_bytes"] / MiB, width, color=f"C{i}", label=name if j == 0 else None)
            elif v.get("estimated_peak_bytes"):
                ax_m.bar(x, v["estimated_peak_bytes"] / MiB, width, color="none", edgecolor=f"C{i}", hatch="//",
                         label=f"{name} (does not fit, estimate)")
    labels = [f"{row['vocab'] // 1000}k" for row in rows]
    for ax, title in ((ax_t, "speed-up over torch AdaptiveLogSoftmaxWithLoss (higher is better)"),
                      (ax_m, "peak memory of fwd+bwd, MiB (lower is better)")):
        ax.set_xticks(range(len(rows)), labels)
        ax.set_xlabel("vocabulary")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    ax_m.set_yscale("log")
    ax_m.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    ax_t.axhline(1.0, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_bars(title: str, labels: list[str], values: list[float], out: Path, ylabel: str, ref: float | None = 1.0,
              log: bool = False) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.6))
    ax.bar(range(len(labels)), values, color=[f"C{i}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if log:
        from matplotlib.ticker import FormatStrFormatter
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    if ref is not None:
        ax.axhline(ref, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plots(kind: str, data: dict[str, dict], plot_dir: Path) -> dict[str, Path]:
    plot_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    if "bench_softmax" in data:
        made["bench_softmax"] = plot_softmax(data["bench_softmax"], plot_dir / f"{kind}_softmax.png")
    if "bench_lstm_layer" in data:
        rows = rows_of(data["bench_lstm_layer"])
        made["bench_lstm_layer"] = plot_bars(
            "LSTMP layer fwd+bwd: speed-up over nn.LSTM(proj_size)",
            [f"{r['group']}: {r['name'].split('[')[0].removeprefix('test_')}" for r in rows],
            [r.get("speedup_vs_baseline", 0) for r in rows], plot_dir / f"{kind}_lstm_layer.png", "x nn.LSTM")
    if "bench_data" in data:
        v = {k: r for row in rows_of(data["bench_data"]) for k, r in row.get("variants", {}).items()}
        made["bench_data"] = plot_bars("data pipeline: tokens/s over the allennlp-style baseline", list(v),
                                       [r.get("speedup_vs_baseline", 0) for r in v.values()],
                                       plot_dir / f"{kind}_data.png", "x allennlp-style", log=True)
    if "bench_train" in data:
        rows = [r for r in rows_of(data["bench_train"]) if r.get("fraction_of_peak") is not None]
        if rows:
            made["bench_train"] = plot_bars("training step: achieved / measured fp32 matmul peak",
                                            [r.get("preset", r["name"]) for r in rows],
                                            [100 * r["fraction_of_peak"] for r in rows],
                                            plot_dir / f"{kind}_train.png", "% of peak", ref=None)
    curves = {stem: p for stem, p in data.items() if p.get("benchmark") == "pretrain_curve"}
    if curves:  # pretrain_curve*.json: one file per classifier recipe
        from benchmarks.report_curve import plot_curve
        for stem, payload in curves.items():
            made[stem] = plot_curve(payload, plot_dir / f"{kind}_{stem}.png", _plt())
    return made


# ----------------------------------------------------------------------------------- report
TITLES = {"bench_softmax": "Softmax: full vs adaptive vs torch.nn.AdaptiveLogSoftmaxWithLoss",
          "bench_lstm_layer": "LSTMP layer", "bench_train": "Training step: FLOP/s and fraction of peak",
          "bench_data": "Data pipeline", "bilm_tf": "Training throughput: elmo-dist vs bilm-tf, the original ELMo trainer", "ppl_softmax": "PTB perplexity: adaptive vs full softmax",
          "bench_scaling": "1 vs 2 ranks", "pretrain_curve": "Downstream accuracy against pretraining compute (scalar mix at 1x lr, to 181.7 CPU-minutes)",
          "pretrain_curve_mix30": "Downstream accuracy against pretraining compute (classify's defaults: scalar mix at 30x lr)", "embed_small": "ELMo embedding: elmo-dist vs AllenNLP 2.10.1, small sizes",
          "elmo_frozen": "Downstream training with a frozen Elmo: token cache vs BiLM.forward",
          "elmo_frozen_2threads": "Downstream training with a frozen Elmo, 2 threads on a loaded box"}
ORDER = ["pretrain_curve_mix30", "pretrain_curve", "bench_softmax", "ppl_softmax", "bench_lstm_layer", "bench_train", "bilm_tf", "bench_data", "bench_scaling",
         "embed_small", "elmo_frozen", "elmo_frozen_2threads"]


def render(results: Path, out: Path) -> str:
    loaded = load(results)
    lines = ["# elmo-dist benchmark report", "",
             f"Rendered by `python -m benchmarks.report` from {results}/<cpu|gpu>/*.json. Ratios are measured "
             "side by side in one run (variants interleaved round by round); absolute times are shown for "
             "GPU results only, and are in the JSON files for CPU ones.", ""]
    if not loaded:
        return "\n".join(lines + ["No results yet: run `elmo-dist bench` first.", ""])
    for kind, data in loaded.items():
        made = plots(kind, data, out.parent / "plots")
        gpu = kind == "gpu"
        sections, summary = [], []
        for stem in ORDER + sorted(set(data) - set(ORDER)):
            if stem not in data:
                continue
            payload = data[stem]
            try:
                body, s = section(stem, payload, gpu, data)
            except (KeyError, TypeError, ValueError, IndexError) as e:  # a file in a format not known here
                body, s = [f"(not rendered: {type(e).__name__}: {e}; see the JSON file)", ""], []
            summary += s
            sections += [f"### {TITLES.get(stem, stem)}", "", prov_line(payload), "", *body]
            if stem in made:
                sections += [f"![{stem}]({made[stem].relative_to(out.parent).as_posix()})", ""]
        lines += [f"## {kind.upper()}", "", "### Ratios against the baselines", ""]
        lines += table(["comparison", "ours", "ratio", "also"], summary) if summary else ["(none)", ""]
        lines += sections
    return "\n".join(lines)


def section(stem: str, payload: dict, gpu: bool, data: dict) -> tuple[list[str], list[list]]:
    """(markdown lines, summary rows) of one results file."""
    if stem == "bench_softmax":
        return softmax_section(payload, gpu)
    if stem == "bench_lstm_layer":
        return lstm_section(payload, gpu)
    if stem == "bench_train":
        return train_section(payload, gpu)
    if stem == "bench_data":
        return data_section(payload, gpu, data.get("bench_train"))
    if stem == "ppl_softmax":
        return ppl_section(payload)
    if stem == "bench_scaling":
        return scaling_section(payload)
    if stem == "embed_small":
        return embed_section(payload)
    if stem == "bilm_tf":
        return bilm_tf_section(payload)
    if payload.get("benchmark") == "elmo_frozen":  # elmo_frozen*.json: one file per thread count
        return elmo_frozen_section(payload)
    if payload.get("benchmark") == "pretrain_curve":
        from benchmarks.report_curve import curve_section
        return curve_section(payload, table)
    return generic_section(payload), []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="folder holding cpu/ and gpu/ result files")
    p.add_argument("--out", type=Path, default=None, help="markdown path (default: <results>/REPORT.md)")
    args = p.parse_args(argv)
    out = args.out or args.results / "REPORT.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(args.results, out)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"report -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
