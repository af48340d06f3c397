"""The classifier: layer combination -> sequence encoder -> linear output (imports torch only).

    layers (B, L+1, T, D), mask (B, T)
      -> combine: scalar-mix   gamma * sum_j softmax(w)_j h_j          (w, gamma learned)
                  equal        sum_j h_j / (L+1)                        (nothing learned)
                  learned      sum_j a_tj h_tj, a_t = softmax_j(v . tanh(W h_tj + e_j))
                               a small attention network: the weights depend on the token
                  layer0       h_0 (the context-free token embedding; a baseline)
      -> (B, T, D) -> dropout -> encoder: ffpool (relu(W x_t), then [mean; max] over tokens, (B, 2H))
                                         bilstm (final forward and backward states, (B, 2H))
                                         mean / max (over unmasked tokens, (B, D))
      -> linear -> logits (B, C)

ELMo + bag of words (FusionClassifier): the same document vector h (B, H') concatenated with
the document's TF-IDF vector t (B, V) before the linear layer: logits = W [h; t] + b.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from elmo_dist.model.elmo import ScalarMix

COMBINERS = ("scalar-mix", "equal", "learned", "layer0")
ENCODERS = ("ffpool", "bilstm", "mean", "max")


class ScalarMixCombiner(nn.Module):
    """ELMo's scalar mix over the L+1 layers; ``trainable=False`` freezes equal weights (1/(L+1), gamma 1)."""

    def __init__(self, n_layers: int, trainable: bool = True, layer_norm: bool = False):
        super().__init__()
        self.mix = ScalarMix(n_layers, do_layer_norm=layer_norm, trainable=trainable)

    def forward(self, layers: Tensor, mask: Tensor) -> Tensor:
        return self.mix(layers, mask)  # (B, T, D)

    def layer_weights(self) -> Tensor:
        """softmax(w): (L+1,), sums to 1."""
        return torch.softmax(self.mix.scalar_parameters.detach(), dim=0)

    def gamma(self) -> float:
        return float(self.mix.gamma.detach())


class LayerAttention(nn.Module):
    """Per-token attention over the layers: a_tj = softmax_j(v . tanh(W h_tj + e_j)), out_t = sum_j a_tj h_tj.

    ``e_j`` is a learned embedding of layer j (so the network can prefer a layer outright) and W, v
    score each layer's vector (so the preference can change from token to token).
    """

    def __init__(self, n_layers: int, dim: int, hidden: int = 64):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.layer_embedding = nn.Parameter(torch.zeros(n_layers, hidden))  # e (L+1, A)
        self.score = nn.Linear(hidden, 1, bias=False)

    def token_weights(self, layers: Tensor) -> Tensor:
        """(B, L+1, T, D) -> a (B, T, L+1), each row sums to 1."""
        h = layers.transpose(1, 2)  # (B, T, L+1, D)
        scores = self.score(torch.tanh(self.proj(h) + self.layer_embedding)).squeeze(-1)  # (B, T, L+1)
        return torch.softmax(scores, dim=-1)

    def forward(self, layers: Tensor, mask: Tensor) -> Tensor:
        a = self.token_weights(layers)  # (B, T, L+1)
        return torch.einsum("btj,bjtd->btd", a, layers)  # (B, T, D)


class SingleLayer(nn.Module):
    """One layer of the stack (``index`` 0: the token embedding)."""

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, layers: Tensor, mask: Tensor) -> Tensor:
        return layers[:, self.index]  # (B, T, D)


class BiLSTMEncoder(nn.Module):
    """A one-layer BiLSTM over the unmasked tokens; output: final forward and backward states (B, 2H)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h (2, B, H)
        return torch.cat([h[0], h[1]], dim=-1)  # (B, 2H)


class PoolEncoder(nn.Module):
    """Mean or max over the unmasked tokens: (B, T, D) -> (B, D)."""

    def __init__(self, dim: int, kind: str):
        super().__init__()
        if kind not in ("mean", "max"):
            raise ValueError(f"pooling must be mean or max; got {kind!r}")
        self.kind, self.output_dim = kind, dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1)  # (B, T, 1)
        if self.kind == "max":
            return x.masked_fill(~m, float("-inf")).amax(dim=1)
        return (x * m).sum(1) / m.sum(1).clamp(min=1)


class FeedForwardPoolEncoder(nn.Module):
    """A per-token feed-forward layer, then mean and max over the unmasked tokens:
    u_t = relu(W x_t + b) (B, T, H); output [mean_t u_t ; max_t u_t] (B, 2H).

    The ReLU units act as learned detectors of token features (a word, a kind of context); mean
    counts how often each fires, max whether it fired at all. On BBC News it beat the BiLSTM and
    plain pooling on dev for every biLM tried (see the README's classify section), and it has no
    recurrence, so an epoch costs a few matrix products.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.ff = nn.Linear(dim, hidden)
        self.output_dim = 2 * hidden

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        u = torch.relu(self.ff(x))  # (B, T, H)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        mean = (u * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)
        # u >= 0, so a masked 0 never wins the max over a document with a token.
        return torch.cat([mean, (u * m).amax(dim=1)], dim=-1)  # (B, 2H)


def make_encoder(kind: str, dim: int, hidden: int) -> nn.Module:
    """The sequence encoder named ``kind`` (one of ENCODERS) over D = ``dim`` features."""
    if kind == "bilstm":
        return BiLSTMEncoder(dim, hidden)
    if kind == "ffpool":
        return FeedForwardPoolEncoder(dim, hidden)
    return PoolEncoder(dim, kind)


class LayerClassifier(nn.Module):
    """combine -> dropout -> encode -> dropout -> linear; see the module docstring."""

    def __init__(self, n_layers: int, dim: int, n_classes: int, combine: str = "scalar-mix",
                 encoder: str = "bilstm", hidden: int = 64, dropout: float = 0.3, layer_norm: bool = False):
        super().__init__()
        if combine not in COMBINERS:
            raise ValueError(f"unknown layer combination {combine!r}; choose one of: {', '.join(COMBINERS)}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of: {', '.join(ENCODERS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.combine_kind = combine
        if combine == "scalar-mix":
            self.combine = ScalarMixCombiner(n_layers, trainable=True, layer_norm=layer_norm)
        elif combine == "equal":
            self.combine = ScalarMixCombiner(n_layers, trainable=False, layer_norm=layer_norm)
        elif combine == "learned":
            self.combine = LayerAttention(n_layers, dim, hidden)
        else:
            self.combine = SingleLayer(0)
        self.encoder = make_encoder(encoder, dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(self.encoder.output_dim, n_classes)

    def forward(self, layers: Tensor, mask: Tensor) -> Tensor:
        """layers (B, L+1, T, D) float, mask (B, T) bool -> logits (B, C)."""
        x = self.dropout(self.combine(layers, mask))  # (B, T, D)
        return self.output(self.dropout(self.encoder(x, mask)))  # (B, C)

    def mix_parameters(self) -> list:
        """The scalar mix's w and gamma (L+2 numbers); empty for the other combinations."""
        if self.combine_kind != "scalar-mix":
            return []
        return [p for p in self.combine.parameters() if p.requires_grad]

    def param_groups(self, lr: float, mix_lr_scale: float = 1.0) -> list:
        """Adam groups: the scalar mix's w and gamma with ``lr * mix_lr_scale``, the rest with ``lr``.

        Why a larger rate for the mix: its L+2 numbers get one gradient per batch like every other
        weight, and at lr 1e-2 they barely move before early stopping: with 148 BBC training
        articles (5 batches an epoch) the learned weights stayed near equal ([0.35, 0.29, 0.36])
        while layer 0 alone was 15 points more accurate. Scales 1, 10, 30 and 100 on BBC dev
        (the demo's biLM, 3 seeds), 148 articles: 0.558, 0.648, 0.708, 0.602; all 1,489: 0.884,
        0.921, 0.925, 0.868."""
        mix = self.mix_parameters()
        ids = {id(p) for p in mix}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest, "lr": lr}] + ([{"params": mix, "lr": lr * mix_lr_scale}] if mix else [])


class BagOfWordsClassifier(nn.Module):
    """Linear softmax regression on TF-IDF vectors (B, V) -> logits (B, C)."""

    def __init__(self, vocab_size: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(vocab_size, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.dropout(x))


class FusionClassifier(LayerClassifier):
    """ELMo + bag of words: logits = W [h; t] + b, h the LayerClassifier's encoded document (B, H')
    and t its TF-IDF vector (B, V). W is held as two blocks, ``output`` (C, H', with b) and
    ``bow_output`` (C, V), so the TF-IDF block can get its own learning rate and weight decay
    (:meth:`param_groups`); the sum of the two products equals the one concatenated product."""

    def __init__(self, n_layers: int, dim: int, vocab_size: int, n_classes: int, combine: str = "scalar-mix",
                 encoder: str = "bilstm", hidden: int = 64, dropout: float = 0.3, layer_norm: bool = False):
        super().__init__(n_layers, dim, n_classes, combine, encoder, hidden, dropout, layer_norm)
        if vocab_size < 1:
            raise ValueError(f"ELMo + bag of words needs a TF-IDF vocabulary; got {vocab_size} words")
        self.bow_output = nn.Linear(vocab_size, n_classes, bias=False)

    def forward(self, layers: Tensor, mask: Tensor, tfidf: Tensor) -> Tensor:
        """layers (B, L+1, T, D), mask (B, T) bool, tfidf (B, V) -> logits (B, C)."""
        x = self.dropout(self.combine(layers, mask))  # (B, T, D)
        h = self.dropout(self.encoder(x, mask))  # (B, H')
        return self.output(h) + self.bow_output(tfidf)  # (B, C)

    @torch.no_grad()
    def warm_start(self, bow: "BagOfWordsClassifier") -> None:
        """Start as the trained bag-of-words model ``bow``: its weights in the TF-IDF block, its bias,
        and zeros for the ELMo block, so the logits equal ``bow``'s until training moves them. ELMo
        is then added to an existing model, and early stopping (``fit(keep_start=True)``) keeps
        the bag of words unless ELMo improves dev accuracy. Jointly from scratch, the ELMo block
        fit the training set first and left the TF-IDF block undertrained (BBC test 0.967 against
        the bag of words' 0.972, two seeds)."""
        self.bow_output.weight.copy_(bow.output.weight)
        self.output.bias.copy_(bow.output.bias)
        self.output.weight.zero_()

    def param_groups(self, lr: float, mix_lr_scale: float = 1.0, bow_lr: float = 1e-2,
                     bow_weight_decay: float = 0.0) -> list:
        """Adam groups: the TF-IDF block with ``bow_lr`` and ``bow_weight_decay``, the rest as
        :meth:`LayerClassifier.param_groups` (frozen parameters, e.g. the equal mix, left out)."""
        bow = [self.bow_output.weight]
        groups = super().param_groups(lr, mix_lr_scale)
        groups[0]["params"] = [p for p in groups[0]["params"] if p is not self.bow_output.weight]
        return groups + [{"params": bow, "lr": bow_lr, "weight_decay": bow_weight_decay}]
