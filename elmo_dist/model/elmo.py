"""ELMo for downstream models: a biLM (frozen or trainable) and k learned scalar mixes of its layers.

    layers = biLM(char_ids)                      # (B, L+1, T, 2P), boundaries removed, mask (B, T)
    rep_k  = dropout(gamma_k * sum_j softmax(w_k)_j * norm(layers[:, j]))     k = 1 .. K

Peters et al. (2018) learn one mix per place ELMo enters the task model (input, output), so
``num_output_representations`` gives K independent ScalarMix modules over the same biLM run.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .bilm import BiLM, token_mask


class ScalarMix(nn.Module):
    """``gamma * sum_j softmax(w)_j * h_j`` over ``mixture_size`` tensors of one shape.

    With ``do_layer_norm`` each h_j is first normalised with a single mean and variance taken
    over all of its unmasked elements (every unmasked position of every row, every feature):
    ``(h_j - mean_j) / sqrt(var_j + eps)``; masked positions do not enter the statistics.
    """

    def __init__(self, mixture_size: int, do_layer_norm: bool = False,
                 initial_scalar_parameters: Optional[Sequence[float]] = None, trainable: bool = True,
                 eps: float = 1e-12):
        super().__init__()
        if mixture_size < 1:
            raise ValueError(f"ScalarMix: mixture_size must be >= 1; got {mixture_size}")
        if initial_scalar_parameters is None:
            initial_scalar_parameters = [0.0] * mixture_size
        if len(initial_scalar_parameters) != mixture_size:
            raise ValueError(f"ScalarMix: initial_scalar_parameters has {len(initial_scalar_parameters)} "
                             f"values for mixture_size {mixture_size}")
        self.mixture_size, self.do_layer_norm, self.eps = mixture_size, do_layer_norm, eps
        self.scalar_parameters = nn.Parameter(torch.tensor([float(v) for v in initial_scalar_parameters]),
                                              requires_grad=trainable)  # w (mixture_size,)
        self.gamma = nn.Parameter(torch.tensor([1.0]), requires_grad=trainable)

    def _normalise(self, h: Tensor, mask: Tensor) -> Tensor:
        """h (B, T, D), mask (B, T) -> h standardised by its unmasked elements' mean and variance."""
        m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        count = (m.sum() * h.shape[-1]).clamp(min=1)
        mean = (h * m).sum() / count
        var = (((h - mean) * m) ** 2).sum() / count
        return (h - mean) / torch.sqrt(var + self.eps)

    def forward(self, tensors: Union[Tensor, Sequence[Tensor]], mask: Optional[Tensor] = None) -> Tensor:
        """tensors: a list of ``mixture_size`` tensors (B, T, D), or one stacked (B, mixture_size, T, D).

        mask (B, T) bool is required with ``do_layer_norm``. Returns (B, T, D).
        """
        layers = list(tensors.unbind(1)) if isinstance(tensors, Tensor) else list(tensors)
        if len(layers) != self.mixture_size:
            raise ValueError(f"ScalarMix: got {len(layers)} tensors, expected mixture_size={self.mixture_size}")
        if self.do_layer_norm and mask is None:
            raise ValueError("ScalarMix: do_layer_norm needs the mask (B, T)")
        weights = torch.softmax(self.scalar_parameters, dim=0)  # (mixture_size,)
        mixed = None
        for j, h in enumerate(layers):
            term = weights[j] * (self._normalise(h, mask) if self.do_layer_norm else h)
            mixed = term if mixed is None else mixed + term
        return self.gamma * mixed


class ElmoOutput(NamedTuple):
    representations: list  # K tensors (..., T, 2P), zero at padding
    mask: Tensor  # (..., T) bool


class Elmo(nn.Module):
    """A biLM and ``num_output_representations`` scalar mixes of its ``n_layers + 1`` layers.

    ``requires_grad=False`` (the default) freezes the biLM: its parameters get no gradient, it runs
    under ``torch.no_grad`` and stays in eval mode (no biLM dropout) even when the Elmo module is in
    training mode; only the mixes (and the task model) learn. With ``requires_grad=True`` the biLM
    fine-tunes and follows the module's train/eval mode.

    Whether LSTM state carries over between calls is the biLM's ``stateful`` flag
    (:meth:`from_allennlp` defaults to stateless: the same sentence always gives the same vectors).
    ``scalar_mix_parameters`` fixes every mix's weights w to these values (not learned; gamma stays 1).

    Frozen and stateless, the layers come from a cross-batch token cache of at most
    ``token_cache_mb`` MB (``elmo_dist.export.frozen``): what depends on a word alone, the
    character CNN above all, is computed once per distinct token, not on every batch of every
    epoch; the layers are those of ``BiLM.forward`` (to ~1e-7). ``token_cache_mb=None`` runs
    ``BiLM.forward`` on every call. Fine-tuning (``requires_grad=True``) and stateful biLMs always
    run ``BiLM.forward``.
    """

    def __init__(self, bilm: BiLM, num_output_representations: int, requires_grad: bool = False,
                 do_layer_norm: bool = False, dropout: float = 0.5,
                 scalar_mix_parameters: Optional[Sequence[float]] = None,
                 token_cache_mb: Optional[float] = 1024.0):
        super().__init__()
        if num_output_representations < 1:
            raise ValueError(f"Elmo: num_output_representations must be >= 1; got {num_output_representations}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Elmo: dropout must be in [0, 1); got {dropout}")
        self.bilm = bilm
        self.requires_grad = requires_grad
        for p in self.bilm.parameters():
            p.requires_grad_(requires_grad)
        n_mix = bilm.config.n_layers + 1
        self.scalar_mixes = nn.ModuleList(
            ScalarMix(n_mix, do_layer_norm, scalar_mix_parameters, trainable=scalar_mix_parameters is None)
            for _ in range(num_output_representations))
        self.dropout = nn.Dropout(dropout)
        if token_cache_mb is not None and token_cache_mb <= 0:
            raise ValueError(f"Elmo: token_cache_mb must be > 0 or None; got {token_cache_mb}")
        self.token_cache_mb = token_cache_mb
        self._frozen_layers = None  # built on first use (export.frozen.FrozenLayers); not state
        if not requires_grad:
            self.bilm.eval()

    def __getstate__(self):
        state = super().__getstate__()
        state["_frozen_layers"] = None  # a cache and a thread pool: rebuilt on use, never copied or pickled
        return state

    def _layers(self, char_ids: Tensor) -> tuple[Tensor, Tensor]:
        """char ids (B, T, C) -> biLM layers (B, L+1, T, 2P) and mask (B, T), by the cached path
        when it applies (frozen, stateless, a cache size given, batch_to_ids' layout)."""
        if not self.requires_grad and not self.bilm.stateful and self.token_cache_mb is not None:
            if self._frozen_layers is None:
                from elmo_dist.export.frozen import FrozenLayers  # export builds on model: imported late
                self._frozen_layers = FrozenLayers(self.bilm, self.token_cache_mb)
            if self._frozen_layers.applies(char_ids, token_mask(char_ids)):
                return self._frozen_layers(char_ids)
        if self.requires_grad:
            out = self.bilm(char_ids)
        else:
            with torch.no_grad():
                out = self.bilm(char_ids)
        return out.layers, out.mask

    @classmethod
    def from_allennlp(cls, options_file, weight_file, num_output_representations: int,
                      stateful: bool = False, **kwargs) -> "Elmo":
        """Elmo over a bilm-tf/AllenNLP model; ``kwargs`` go to :class:`Elmo` (requires_grad, dropout, ...)."""
        return cls(BiLM.from_allennlp(options_file, weight_file, stateful=stateful),
                   num_output_representations, **kwargs)

    def train(self, mode: bool = True) -> "Elmo":
        super().train(mode)
        if not self.requires_grad:
            self.bilm.eval()
        return self

    def get_output_dim(self) -> int:
        return 2 * self.bilm.config.projection_dim

    def forward(self, char_ids: Tensor) -> ElmoOutput:
        """char ids (..., T, 50) from ``batch_to_ids`` -> K representations (..., T, 2P) and the mask."""
        lead, (T, C) = char_ids.shape[:-2], char_ids.shape[-2:]
        flat = char_ids.reshape(-1, T, C)  # (B, T, C)
        layers, mask = self._layers(flat)  # (B, L+1, T, 2P), (B, T)
        reps = []
        for mix in self.scalar_mixes:
            rep = self.dropout(mix(layers, mask))  # (B, T, 2P)
            rep = rep * mask.unsqueeze(-1).to(rep.dtype)
            reps.append(rep.reshape(*lead, T, rep.shape[-1]))
        return ElmoOutput(reps, mask.reshape(*lead, T))
