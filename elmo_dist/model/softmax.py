"""Output layers shared by the forward and backward LMs: full and adaptive softmax.

Both return the per-token negative log-likelihood, so the biLM sums and counts it the same way.

Adaptive softmax (Grave et al. 2017) over a frequency-sorted vocabulary with cutoffs
c_1 < ... < c_n: the head scores the c_1 most frequent words plus one logit per tail cluster;
cluster k holds words [c_k, c_{k+1}) and scores them from a projection of the hidden state to
P / div**(k+1) dims. log p(w) = log p_head(cluster(w)) + log p_k(w | cluster). Only the rows
whose target falls in cluster k run cluster k's matmul, which is where the saving comes from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


def _fp32_at_least(x: Tensor) -> Tensor:
    """Log-softmax in at least fp32 (bf16 autocast inputs), float64 left as it is."""
    return x if x.dtype == torch.float64 else x.float()


class FullSoftmax(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden (N, P), targets (N,) in [0, V) -> nll (N,)."""
        return F.cross_entropy(self.proj(hidden), targets, reduction="none")

    def log_probs(self, hidden: Tensor) -> Tensor:
        return F.log_softmax(self.proj(hidden), dim=-1)  # (N, V)


class AdaptiveSoftmax(nn.Module):
    def __init__(self, dim: int, vocab_size: int, cutoffs: list[int], div_value: float):
        super().__init__()
        cutoffs = [c for c in cutoffs if c < vocab_size]
        if not cutoffs:
            raise ValueError(
                f"adaptive softmax: every cutoff {cutoffs} is >= vocab_size {vocab_size}; "
                "lower ModelConfig.adaptive_cutoffs or use softmax='full'")
        self.cutoffs = cutoffs + [vocab_size]
        self.shortlist = cutoffs[0]
        n_clusters = len(cutoffs)
        self.head = nn.Linear(dim, self.shortlist + n_clusters)
        self.tails = nn.ModuleList()
        for k in range(n_clusters):
            hid = max(1, int(dim // (div_value ** (k + 1))))
            size = self.cutoffs[k + 1] - self.cutoffs[k]
            self.tails.append(nn.Sequential(nn.Linear(dim, hid, bias=False), nn.Linear(hid, size)))

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden (N, P), targets (N,) -> nll (N,), running each tail only on its own rows."""
        head_logp = F.log_softmax(_fp32_at_least(self.head(hidden)), dim=-1)  # (N, shortlist + n)
        in_head = targets < self.shortlist
        # Head words read their own logit; tail words read their cluster's logit first.
        cluster = torch.bucketize(targets, torch.tensor(self.cutoffs[:-1], device=targets.device), right=True)
        head_index = torch.where(in_head, targets, self.shortlist + cluster - 1)
        logp = head_logp.gather(1, head_index.unsqueeze(1)).squeeze(1)  # (N,)
        for k, tail in enumerate(self.tails):
            rows = (cluster == k + 1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            tail_logp = F.log_softmax(_fp32_at_least(tail(hidden.index_select(0, rows))), dim=-1)  # (n_k, size_k)
            local = (targets.index_select(0, rows) - self.cutoffs[k]).unsqueeze(1)
            logp = logp.index_add(0, rows, tail_logp.gather(1, local).squeeze(1))
        return -logp

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Full (N, V) log-probabilities (for evaluation and tests)."""
        head_logp = F.log_softmax(_fp32_at_least(self.head(hidden)), dim=-1)
        parts = [head_logp[:, :self.shortlist]]
        for k, tail in enumerate(self.tails):
            parts.append(head_logp[:, self.shortlist + k:self.shortlist + k + 1]
                         + F.log_softmax(_fp32_at_least(tail(hidden)), dim=-1))
        return torch.cat(parts, dim=1)


def build_softmax(config: ModelConfig) -> nn.Module:
    if config.vocab_size < 1:
        raise ValueError("ModelConfig.vocab_size must be set (>= 1) to build the softmax")
    if config.softmax == "full":
        return FullSoftmax(config.projection_dim, config.vocab_size)
    return AdaptiveSoftmax(config.projection_dim, config.vocab_size,
                           list(config.adaptive_cutoffs), config.adaptive_div_value)
