"""Training one classifier: Adam, early stopping on dev accuracy, the best epoch's weights kept.

``fit`` is the same loop for the layer classifiers and the bag-of-words baseline; a *batcher*
turns a list of document indices into the model's inputs on the device:

  * :class:`LayerBatcher`: (layers (B, L+1, T, D) float32 zero-padded, mask (B, T) bool)
  * :class:`DenseBatcher`: (features (B, V),)
  * :class:`FusionBatcher`: (layers, mask, features): both of the above, for ELMo + bag of words

Epoch e shuffles the training documents with ``torch.Generator().manual_seed(seed * 1000 + e)``
and the model is initialised after ``torch.manual_seed(seed)``: a run is a function of its seed.
After every epoch the dev accuracy is measured (ties broken by the lower dev loss); training
stops after ``patience`` epochs without improvement or at ``epochs``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class FitConfig:
    epochs: int = 20
    """Most epochs to train."""
    patience: int = 3
    """Stop after this many epochs without a better dev accuracy."""
    batch_size: int = 32
    """Documents per batch."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    seed: int = 0
    """Initialisation and shuffling seed."""

    def __post_init__(self):
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")


@dataclass
class FitResult:
    best_epoch: int
    """1-based epoch whose weights were kept."""
    epochs_run: int
    """Epochs trained before stopping."""
    dev_accuracy: float
    """Dev accuracy of the kept weights."""
    seconds: float
    """Training wall time, dev evaluations included."""
    history: list = field(default_factory=list)
    """Per epoch: train_loss, dev_loss, dev_accuracy."""


def layer_statistics(docs: Sequence[Tensor], idx: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of every feature of every layer over all tokens of the
    documents ``idx``: two (L+1, 1, D) float32 tensors (std floored at 1e-6)."""
    total = square = None
    count = 0
    for i in idx:
        x = docs[i].double()  # (L+1, T, D)
        s, q = x.sum(1, keepdim=True), (x * x).sum(1, keepdim=True)
        total, square = (s, q) if total is None else (total + s, square + q)
        count += x.shape[1]
    mean = total / count
    var = (square / count - mean * mean).clamp(min=0)
    return mean.float(), var.sqrt().clamp(min=1e-6).float()


def layer_whitening(docs: Sequence[Tensor], idx: Sequence[int], ridge: float = 0.01) -> tuple[Tensor, Tensor]:
    """Per layer, the mean mu (L+1, 1, D) and a ZCA whitening matrix W (L+1, D, D) over all tokens
    of the documents ``idx``: W = U diag((lambda + ridge * mean(lambda))^-1/2) U^T, with
    Sigma = U diag(lambda) U^T the layer's token covariance; ``(x - mu) @ W`` then has about unit
    covariance. The ridge keeps directions of (near) zero variance (layer 0 is the token embedding
    written twice, so half its eigenvalues are 0) from being blown up.

    Why: a biLM's layers are very anisotropic (on BBC News the top eigenvalue of the tiny demo
    biLM's layer 0 is ~5,000x the median, trained or not), and per-feature standardisation leaves
    the small directions, where much of the word identity lives, buried; whitening raised the
    dev accuracy of the ffpool classifier by 4-8 points for trained and untrained biLMs alike."""
    if ridge <= 0:
        raise ValueError(f"whitening ridge must be > 0; got {ridge}")
    mean, _ = layer_statistics(docs, idx)
    mu = mean.double()  # (L+1, 1, D)
    cov, count = None, 0
    for i in idx:
        x = docs[i].double() - mu  # (L+1, T, D)
        c = x.transpose(1, 2) @ x  # (L+1, D, D)
        cov = c if cov is None else cov + c
        count += x.shape[1]
    eigenvalues, vectors = torch.linalg.eigh(cov / count)  # (L+1, D), (L+1, D, D)
    eigenvalues = eigenvalues.clamp(min=0)
    scale = (eigenvalues + ridge * eigenvalues.mean(-1, keepdim=True).clamp(min=1e-12)).rsqrt()
    w = vectors @ torch.diag_embed(scale) @ vectors.transpose(1, 2)  # (L+1, D, D)
    return mean, w.float()


NORMALIZATIONS = ("whiten", "standardize", "none")


def layer_normalization(kind: str, docs: Sequence[Tensor], idx: Sequence[int]) -> Optional[tuple[Tensor, Tensor]]:
    """The statistics a :class:`LayerBatcher` applies: ``whiten`` (mu, W), ``standardize``
    (mean, std), ``none`` None; all from the documents ``idx`` (the training set) only."""
    if kind == "whiten":
        return layer_whitening(docs, idx)
    if kind == "standardize":
        return layer_statistics(docs, idx)
    if kind == "none":
        return None
    raise ValueError(f"unknown layer normalisation {kind!r}; choose one of: {', '.join(NORMALIZATIONS)}")


class LayerBatcher:
    """Pads the per-document float16 layers (L+1, T_i, D) of the chosen documents; ``stats`` from
    :func:`layer_normalization` are applied first: (mean, std) (L+1, 1, D) each standardises every
    feature, (mu, W) with W (L+1, D, D) whitens each layer: ``(x - mu) @ W``.

    With ``stats``, every document is normalised once, here, into float32 (the same numbers as
    normalising it in each batch, which repeated the whitening matmuls every epoch of every run:
    on the demo's BBC layers that was about a third of a classifier run). The price is a float32
    copy of the documents: 210 MB for BBC News at 64 tokens and 3 x 128 features."""

    def __init__(self, docs: Sequence[Tensor], device: torch.device, stats: Optional[tuple] = None):
        self.device, self.stats = device, stats
        self.docs = docs if stats is None else [self._normalize(x.float()) for x in docs]

    def length(self, i: int) -> int:
        return self.docs[i].shape[1]

    def __call__(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        items = [self.docs[i] for i in idx]
        L1, D = items[0].shape[0], items[0].shape[2]
        T = max(x.shape[1] for x in items)
        layers = torch.zeros(len(items), L1, T, D, dtype=torch.float32)
        mask = torch.zeros(len(items), T, dtype=torch.bool)
        for b, x in enumerate(items):
            n = x.shape[1]
            layers[b, :, :n] = x
            mask[b, :n] = True
        return layers.to(self.device), mask.to(self.device)  # (B, L+1, T, D), (B, T)

    def _normalize(self, x: Tensor) -> Tensor:
        """(L+1, T, D) -> (L+1, T, D) with the batcher's statistics."""
        shift, scale = self.stats
        # std is (L+1, 1, D), W (L+1, D, D); for D = 1 the two agree.
        return (x - shift) / scale if scale.shape[-2] == 1 else (x - shift) @ scale


class DenseBatcher:
    """Rows of a (N, V) feature matrix."""

    def __init__(self, features: np.ndarray, device: torch.device):
        self.features, self.device = torch.from_numpy(features), device

    def length(self, i: int) -> int:
        return 1

    def __call__(self, idx: Sequence[int]) -> tuple[Tensor]:
        return (self.features[list(idx)].to(self.device),)


class FusionBatcher:
    """A LayerBatcher's (layers, mask) and a DenseBatcher's features of the same documents."""

    def __init__(self, layers: LayerBatcher, features: DenseBatcher):
        self.layers, self.features, self.device = layers, features, layers.device

    def length(self, i: int) -> int:
        return self.layers.length(i)

    def __call__(self, idx: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        return (*self.layers(idx), *self.features(idx))  # (B, L+1, T, D), (B, T), (B, V)


def _eval_batches(batcher, idx: Sequence[int], batch_size: int) -> list:
    """Evaluation batches of similar length (less padding), in a fixed order."""
    order = sorted(idx, key=lambda i: (-batcher.length(i), i))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


@torch.no_grad()
def predict(model: nn.Module, batcher, idx: Sequence[int], labels: Sequence[int],
            batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Predicted classes in the order of ``idx`` and the mean cross-entropy."""
    model.eval()
    pos = {i: k for k, i in enumerate(idx)}
    pred = np.zeros(len(idx), dtype=np.int64)
    loss_sum = 0.0
    for batch in _eval_batches(batcher, idx, batch_size):
        logits = model(*batcher(batch))  # (B, C)
        y = torch.tensor([labels[i] for i in batch], device=logits.device)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        for i, p in zip(batch, logits.argmax(-1).tolist()):
            pred[pos[i]] = p
    return pred, loss_sum / max(len(idx), 1)


def fit(model: nn.Module, batcher, labels: Sequence[int], train_idx: Sequence[int], dev_idx: Sequence[int],
        cfg: FitConfig, log: Optional[Callable[[dict], None]] = None, progress: bool = True,
        desc: str = "train", param_groups: Optional[list] = None, keep_start: bool = False) -> FitResult:
    """Trains ``model`` in place (see the module docstring); returns with the best epoch's weights
    loaded. ``param_groups``: Adam parameter groups (their own lr / weight_decay override
    ``cfg``'s); default: every trainable parameter with ``cfg.lr`` and ``cfg.weight_decay``.
    ``keep_start``: the weights it starts from are a candidate too (epoch 0, measured on dev
    first), for a warm-started model that training must improve on to replace them: only a
    higher dev accuracy does (a lower dev loss at the same accuracy does not; on 212 BBC dev
    articles ties are common, and the loss tie-break swapped the bag of words for fusions that
    scored no better on dev and worse on test)."""
    from tqdm import tqdm

    params = param_groups or [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels_t = torch.tensor(list(labels), dtype=torch.long)
    train_idx = list(train_idx)
    best = (-1.0, float("inf"))
    best_state, best_epoch, stale, history = None, 0, 0, []
    start = time.time()
    if keep_start:
        pred, dev_loss = predict(model, batcher, dev_idx, labels)
        # A loss of -inf: an epoch replaces the start only with a strictly higher accuracy.
        best = (float((pred == np.asarray([labels[i] for i in dev_idx])).mean()), float("-inf"))
        best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=not progress, dynamic_ncols=True,
               leave=False)
    for epoch in bar:
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(len(train_idx), generator=gen).tolist()
        loss_sum, seen, t0 = 0.0, 0, time.time()
        for k in range(0, len(perm), cfg.batch_size):
            batch = [train_idx[j] for j in perm[k:k + cfg.batch_size]]
            inputs = batcher(batch)
            logits = model(*inputs)  # (B, C)
            loss = nn.functional.cross_entropy(logits, labels_t[batch].to(logits.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(batch)
            seen += len(batch)
        train_seconds = time.time() - t0
        pred, dev_loss = predict(model, batcher, dev_idx, labels)
        dev_acc = float((pred == np.asarray([labels[i] for i in dev_idx])).mean())
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "dev_loss": dev_loss, "dev_accuracy": dev_acc,
                  "docs_per_s": seen / max(train_seconds, 1e-9)}
        history.append(record)
        if log is not None:
            log(record)
        if (dev_acc, -dev_loss) > (best[0], -best[1]):
            best, best_epoch, stale = (dev_acc, dev_loss), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", dev_acc=f"{dev_acc:.3f}",
                        docs_s=f"{record['docs_per_s']:.0f}", refresh=False)
        if stale >= cfg.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, len(history), best[0], time.time() - start, history)


@torch.no_grad()
def mean_attention(model: nn.Module, batcher: LayerBatcher, idx: Sequence[int], batch_size: int = 64) -> list:
    """The learned combiner's layer weights averaged over every unmasked token of ``idx``: (L+1,)."""
    model.eval()
    total, count = None, 0
    for batch in _eval_batches(batcher, idx, batch_size):
        layers, mask = batcher(batch)
        a = model.combine.token_weights(layers)[mask]  # (tokens, L+1)
        total = a.sum(0) if total is None else total + a.sum(0)
        count += a.shape[0]
    return (total / max(count, 1)).tolist()
