"""The models of the classify stage and how one of them is trained and evaluated with one seed.

    --mode scalar-mix | equal | learned   LayerClassifier with that layer combination
    --mode elmo+bow                        FusionClassifier: ELMo (scalar mix) + TF-IDF
    --baselines adds:
      layer0       LayerClassifier on layer 0 only (no context)
      random-init  the first --mode's classifier on the layers of the untrained biLM (same
                   configuration, the trainer's seeded initialisation); only with a biLM
      bow          our TF-IDF + a linear layer (Adam), numpy/torch
      bow-sklearn  scikit-learn's TfidfVectorizer + LogisticRegression, C chosen on dev
      elmo+bow     (unless it is a --mode) ELMo combined like the first layer --mode, + TF-IDF
      probe        the linear probe: logistic regression on mean- and max-pooled layers
                   (linear_probe.py), what the layers hold for a linear reader
      probe-random-init  the same probe on the random-init control's layers (with a biLM)

ELMo + bag of words starts from the trained bow baseline of the same seed (its TF-IDF block and
bias; the ELMo block at zero: FusionClassifier.warm_start) and keeps it unless training improves
dev accuracy; its TF-IDF block trains with the bow baseline's learning rate and weight decay
(``bow_lr``, ``bow_weight_decay``), everything else like the layer classifiers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .bow import TfIdf
from .model import BagOfWordsClassifier, FusionClassifier, LayerClassifier
from .report import classification_report, plot_confusion
from .train import DenseBatcher, FitConfig, FusionBatcher, LayerBatcher, fit, layer_normalization, mean_attention, predict

MODES = ("scalar-mix", "equal", "learned")
"""The three ways of combining the biLM's layers that the classifier compares (--mode all)."""
FUSION = "elmo+bow"
"""ELMo + bag of words: a --mode value and a --baselines model."""
MODE_CHOICES = MODES + (FUSION,)
CONTROL = "random-init"
"""The untrained-biLM control's model name (and layer source)."""
PROBE, PROBE_CONTROL = "probe", "probe-random-init"
"""The linear probe on the biLM's layers and on the control's."""
DETERMINISTIC = ("bow-sklearn", "probe")
"""Kinds fit once by scikit-learn (no seed)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """Key in results.json."""
    kind: str
    """layers, fusion, bow, bow-sklearn or probe."""
    combine: Optional[str] = None
    """Layer combination (layers, fusion)."""
    source: str = "bilm"
    """Whose layers: bilm (the given biLM or HDF5) or random-init (the control's)."""
    baseline: bool = False


def model_specs(modes: list, baselines: bool, control: bool) -> list:
    """The models to train, in order: the --mode values, then (with ``baselines``) layer0, the
    random-init control (when ``control``: layers came from a biLM), bow, bow-sklearn, elmo+bow,
    the probe and (with ``control``) the control's probe."""
    main_combine = next((m for m in modes if m in MODES), "scalar-mix")

    def of_mode(mode, name=None, source="bilm", baseline=False):
        kind, combine = ("fusion", main_combine) if mode == FUSION else ("layers", mode)
        return ModelSpec(name or mode, kind, combine, source, baseline)

    specs = [of_mode(m) for m in modes]
    if baselines:
        specs.append(ModelSpec("layer0", "layers", "layer0", baseline=True))
        if control:
            specs.append(of_mode(modes[0], CONTROL, CONTROL, True))
        specs += [ModelSpec("bow", "bow", baseline=True), ModelSpec("bow-sklearn", "bow-sklearn", baseline=True)]
        if FUSION not in modes:
            specs.append(of_mode(FUSION))
        specs.append(ModelSpec(PROBE, "probe", baseline=True))
        if control:
            specs.append(ModelSpec(PROBE_CONTROL, "probe", source=CONTROL, baseline=True))
    return specs


@dataclass
class Inputs:
    """What the models read, built on first use: per layer source its LayerBatcher (standardised
    with that source's training statistics), and the TF-IDF features (fitted on train)."""

    labels: list
    tokens: list
    split: dict
    layers: dict
    """source -> Layers."""
    device: torch.device
    normalize: str = "whiten"
    bow_models: dict = field(default_factory=dict)
    """seed -> the trained bow baseline, which the elmo+bow model of that seed starts from."""
    _cache: dict = field(default_factory=dict)

    def layer_batcher(self, source: str) -> LayerBatcher:
        if source not in self._cache:
            docs = self.layers[source].docs
            stats = layer_normalization(self.normalize, docs, self.split["train"])
            self._cache[source] = LayerBatcher(docs, self.device, stats)
        return self._cache[source]

    def tfidf(self) -> DenseBatcher:
        if "tfidf" not in self._cache:
            vectorizer = TfIdf().fit([self.tokens[i] for i in self.split["train"]])
            self._cache["tfidf"] = DenseBatcher(vectorizer.transform(self.tokens), self.device)
        return self._cache["tfidf"]

    @property
    def vocabulary(self) -> int:
        return self.tfidf().features.shape[1]


def _build(cfg, spec: ModelSpec, inputs: Inputs, n_classes: int, seed: int):
    """(model, batcher, FitConfig, Adam param groups or None) of a torch model (seed the RNG first)."""
    fit_cfg = lambda lr, wd, epochs=cfg.epochs: FitConfig(epochs, cfg.patience, cfg.batch_size, lr, wd, seed)  # noqa: E731
    if spec.kind == "bow":
        return (BagOfWordsClassifier(inputs.vocabulary, n_classes), inputs.tfidf(),
                fit_cfg(cfg.bow_lr, cfg.bow_weight_decay, cfg.bow_epochs), None)
    layers = inputs.layers[spec.source]
    args = (cfg.encoder, cfg.hidden, cfg.dropout, cfg.layer_norm)
    if spec.kind == "fusion":
        bow = inputs.bow_models.get(seed) or _fit_bow(cfg, inputs, n_classes, seed)
        torch.manual_seed(seed)
        model = FusionClassifier(layers.n_layers, layers.dim, inputs.vocabulary, n_classes, spec.combine, *args)
        model.warm_start(bow)
        return (model, FusionBatcher(inputs.layer_batcher(spec.source), inputs.tfidf()), fit_cfg(cfg.lr, 0.0),
                model.param_groups(cfg.lr, cfg.mix_lr_scale, cfg.bow_lr, cfg.bow_weight_decay))
    model = LayerClassifier(layers.n_layers, layers.dim, n_classes, spec.combine, *args)
    return (model, inputs.layer_batcher(spec.source), fit_cfg(cfg.lr, 0.0),
            model.param_groups(cfg.lr, cfg.mix_lr_scale))


def _fit_bow(cfg, inputs: Inputs, n_classes: int, seed: int) -> BagOfWordsClassifier:
    """The bag-of-words model of ``seed`` (as the ``bow`` baseline trains it), for a fusion run
    whose bow baseline did not run (``--only elmo+bow``)."""
    torch.manual_seed(seed)
    model, batcher, fit_cfg, _ = _build(cfg, ModelSpec("bow", "bow"), inputs, n_classes, seed)
    fit(model.to(inputs.device), batcher, inputs.labels, inputs.split["train"], inputs.split["dev"], fit_cfg,
        progress=False)
    inputs.bow_models[seed] = model
    return model


def encoder_name(cfg, spec: ModelSpec) -> str:
    return {"bow": "linear on tf-idf", "bow-sklearn": "logistic regression on tf-idf (scikit-learn)",
            "probe": "logistic regression on [mean; max]-pooled layers (scikit-learn)",
            "fusion": f"{cfg.encoder} + tf-idf, linear"}.get(spec.kind, cfg.encoder)


def train_run(cfg, spec: ModelSpec, seed: Optional[int], inputs: Inputs, classes: list, log, progress: bool) -> dict:
    """Trains and evaluates ``spec`` with ``seed`` (None for bow-sklearn); writes its confusion
    plot; returns its run record (see pipeline's module docstring)."""
    if spec.kind in DETERMINISTIC:
        return _sklearn_run(cfg, spec, inputs, classes, log)
    torch.manual_seed(seed)
    model, batcher, fit_cfg, groups = _build(cfg, spec, inputs, len(classes), seed)
    model = model.to(inputs.device)
    cap = fit_cfg.epochs
    result = fit(model, batcher, inputs.labels, inputs.split["train"], inputs.split["dev"], fit_cfg,
                 lambda record: log({"kind": "epoch", "model": spec.name, "seed": seed, **record}), progress,
                 desc=f"{spec.name} seed {seed}", param_groups=groups, keep_start=spec.kind == "fusion")
    if spec.kind == "bow":
        inputs.bow_models[seed] = model
    test_pred, test_loss = predict(model, batcher, inputs.split["test"], inputs.labels)
    dev_pred, _ = predict(model, batcher, inputs.split["dev"], inputs.labels)
    weights, gamma = (None, None) if spec.combine is None else _layer_weights(
        model, spec.combine, inputs.layers[spec.source].n_layers, inputs.layer_batcher(spec.source),
        inputs.split["test"])
    record = _evaluate(cfg, spec, seed, inputs, classes, dev_pred, test_pred, test_loss, log,
                       {"best_epoch": result.best_epoch})
    record.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run, seconds=round(result.seconds, 2),
                  layer_weights=weights, gamma=gamma,
                  # The epoch cap, not early stopping, ended it, with a better dev accuracy within the
                  # last `patience` epochs: it may still have been rising.
                  stopped_while_rising=result.epochs_run == cap and result.best_epoch > cap - cfg.patience)
    return record


def _sklearn_run(cfg, spec: ModelSpec, inputs: Inputs, classes: list, log) -> dict:
    if spec.kind == "probe":
        from .linear_probe import fit_probe
        r = fit_probe(inputs.layers[spec.source].docs, inputs.labels, inputs.split, name=spec.name)
        size = {"features": r.features}
    else:
        from .sklearn_bow import fit_sklearn_bow
        r = fit_sklearn_bow(inputs.tokens, inputs.labels, inputs.split)
        size = {"vocabulary": r.features}
    record = _evaluate(cfg, spec, None, inputs, classes, r.dev_pred, r.test_pred, r.test_loss, log, {"C": r.C})
    record.update(best_epoch=None, epochs_run=None, seconds=round(r.seconds, 2), layer_weights=None, gamma=None,
                  deterministic=True, C=r.C, dev_accuracy_by_C=r.dev_accuracy_by_C, converged=r.converged, **size)
    return record


def _evaluate(cfg, spec: ModelSpec, seed, inputs: Inputs, classes: list, dev_pred, test_pred, test_loss,
              log, extra: dict) -> dict:
    """The reports, the confusion plot and the test log record; the run record's common part."""
    truth = {s: [inputs.labels[i] for i in inputs.split[s]] for s in ("dev", "test")}
    test = classification_report(truth["test"], test_pred, classes)
    dev = classification_report(truth["dev"], dev_pred, classes)
    png = Path(cfg.out) / (f"confusion-{spec.name}" + ("" if seed is None else f"-seed{seed}") + ".png")
    plot_confusion(test["confusion"], classes, png, f"{spec.name} ({encoder_name(cfg, spec)})"
                   + ("" if seed is None else f", seed {seed}") + f": test acc {test['accuracy']:.3f}")
    log({"kind": "test", "model": spec.name, "seed": seed, "test_accuracy": test["accuracy"],
         "test_macro_f1": test["macro_f1"], "dev_accuracy": dev["accuracy"], **extra})
    return {"model": spec.name, "baseline": spec.baseline, "combine": spec.combine,
            "encoder": encoder_name(cfg, spec), "layers": spec.source if spec.kind not in ("bow", "bow-sklearn") else None, "seed": seed,
            "dev": {k: dev[k] for k in ("accuracy", "macro_f1")}, "test": {**test, "loss": test_loss},
            "confusion_png": png.name}


def describe(run: dict) -> str:
    """One progress line for a finished run."""
    head = (f"  {run['model']:<11} " + ("deterministic" if run["seed"] is None else f"seed {run['seed']}")
            + f": test accuracy {run['test']['accuracy']:.4f}  macro-F1 {run['test']['macro_f1']:.4f}  ")
    if run["seed"] is None:
        return head + f"(C={run['C']:g} chosen on dev, {run['seconds']:.0f} s)" + (
            "" if run.get("converged", True) else "  [lbfgs hit its iteration limit: the fit may be unfinished]")
    line = head + f"(best epoch {run['best_epoch']}/{run['epochs_run']}, {run['seconds']:.0f} s)"
    if run.get("stopped_while_rising"):
        line += "  [the epoch cap ended it while dev accuracy was still rising: raise --epochs]"
    return line + (f"  layer weights {fmt(run['layer_weights'])}" if run["layer_weights"] else "")


class StepLog:
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


def fmt(weights: list) -> str:
    return "[" + ", ".join(f"{w:.2f}" for w in weights) + "]"
