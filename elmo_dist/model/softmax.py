"""Output layers shared by the forward and backward LMs: full and adaptive softmax.

Both return the per-token negative log-likelihood, so the biLM sums and counts it the same way.

Adaptive softmax (Grave et al. 2017) over a frequency-sorted vocabulary with cutoffs
c_1 < ... < c_n: the head scores the c_1 most frequent words plus one logit per tail cluster;
cluster k holds words [c_k, c_{k+1}) and scores them from a projection of the hidden state to
P / div**(k+1) dims. log p(w) = log p_head(cluster(w)) + log p_k(w | cluster). Only the rows
whose target falls in cluster k run cluster k's matmul, which is where the saving comes from.

The head and every tail's output layer run as one fused op, :func:`linear_nll` (matmul,
softmax in place, target log-probability, and the gradient of the logits kept in the same
buffer), so each (rows, classes) block exists once, where ``torch.nn.AdaptiveLogSoftmaxWithLoss``
allocates four (logits, log-probs, the gather's dense gradient, the log-softmax gradient) and
makes about ten passes over them. The backward is then only GEMMs. The head's matmuls are the
same as torch's, so the gain grows with the tail work: see benchmarks/README.md for the ratios.

Under autocast (bf16 on CPU or CUDA, fp16 on CUDA) the matmuls run in the autocast dtype and the
softmax and the returned nll in fp32; parameters and their gradients keep their own dtype.
``torch.nn.AdaptiveLogSoftmaxWithLoss`` fails there (index_copy_ of bf16 into fp32).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

# 16-bit logits are turned into fp32 probabilities this many values at a time (16 MiB of fp32
# scratch). fp32/fp64 logits are processed whole: on a loaded 2-core box every parallel region
# is a barrier, and the head cut into 40 row chunks ran 3-10x slower than in one pass.
_CHUNK_ELEMENTS = 1 << 22
# Below this probability -log(p) loses digits (fp32 denormals); such rows are recomputed exactly.
_TINY = 1e-30


def _fp32_at_least(x: Tensor) -> Tensor:
    """Log-softmax in at least fp32 (bf16 autocast inputs), float64 left as it is."""
    return x if x.dtype == torch.float64 else x.float()


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The matmul dtype autocast would use for ``x`` (its own dtype outside autocast)."""
    device = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _LinearNLL(torch.autograd.Function):
    """nll_i = -log softmax(z_i)[t_i] with z = x W^T + b, fused.

    Shapes: x (N, D), weight (C, D), bias (C,) or None, target (N,) in [0, C) -> nll (N,), in
    fp32 (float64 for float64 inputs). The matmuls run in ``compute_dtype`` (the autocast dtype,
    or x's own).

    The bias rides in the matmul as an extra column, and the inner width is padded with zeros to
    a multiple of 8, at least 16: xa = [x | 1 | 0] (N, Da), wa = [W | b | 0] (C, Da), and
    z = xa wa^T (N, C). Adding b to z would cost a pass over (N, C); the narrowest tail (D = 8
    at P = 128) ran its GEMMs 2-6x slower at D = 8 or 9 than at 16, and the head's three GEMMs
    took 62 ms at D = 129 against 56 at 136 (oneDNN, 1 EPYC core, 2,560 x 2,001).

    Forward: softmax over z in place (fp32 chunks when z is 16-bit); nll = -log p_t, rows whose
    p_t underflowed recomputed with log_softmax; then z becomes E = P - onehot(t), the gradient
    of nll_i w.r.t. z_i (the one-hot subtracted in fp32, so p_t - 1 keeps its digits in bf16).
    Without a gradient to compute, log_softmax in place and no E. One (N, C) buffer in all.

    Backward with upstream g (N,): g * E is never formed; the per-row scale moves to the
    (N, D) side: dx = g * (E W) and [dW | db] = E^T (g * xa). Two GEMMs read E, and no
    elementwise pass over (N, C) is made.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, compute_dtype):
        acc = torch.float64 if compute_dtype == torch.float64 else torch.float32
        need_grad = any(ctx.needs_input_grad[:3])
        with torch.autocast(x.device.type, enabled=False):
            xa, wa = _augment(x, weight, bias, compute_dtype)  # (N, Da), (C, Da)
            z = xa @ wa.t()  # (N, C)
            t = target.unsqueeze(1)  # (N, 1)
            if not need_grad and z.dtype == acc:
                nll = -torch.log_softmax(z, dim=1, out=z).gather(1, t).squeeze(1)  # (N,)
            elif not need_grad:
                nll = torch.empty(z.shape[0], dtype=acc, device=z.device)  # (N,)
                for r0, r1 in _row_chunks(z, acc):
                    logp = torch.log_softmax(z[r0:r1], dim=1, dtype=acc)
                    nll[r0:r1] = -logp.gather(1, t[r0:r1]).squeeze(1)
            elif z.dtype == acc:
                torch.softmax(z, dim=1, out=z)  # z = P
                nll = -z.gather(1, t).squeeze(1).log()  # (N,)
                nll = _recompute_tiny(nll, xa, wa, t)
                z.scatter_add_(1, t, z.new_full(t.shape, -1.0))  # z = P - onehot
            else:
                nll = torch.empty(z.shape[0], dtype=acc, device=z.device)  # (N,)
                for r0, r1 in _row_chunks(z, acc):
                    p = torch.softmax(z[r0:r1], dim=1, dtype=acc)  # (rows, C)
                    nll[r0:r1] = -p.gather(1, t[r0:r1]).squeeze(1).log()
                    z[r0:r1].copy_(p.scatter_add_(1, t[r0:r1], p.new_full((r1 - r0, 1), -1.0)))
                nll = _recompute_tiny(nll, xa, wa, t)
        if need_grad:
            ctx.save_for_backward(xa, wa, z)
        ctx.has_bias, ctx.dim = bias is not None, x.shape[1]
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        xa, wa, e = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        D = ctx.dim
        dx = dw = db = None
        with torch.autocast(e.device.type, enabled=False):
            g = grad_nll.to(e.dtype).unsqueeze(1)  # (N, 1)
            if need_x:
                dx = ((e @ wa)[:, :D] * g).to(x_dtype)  # (N, D)
            if need_w or (need_b and ctx.has_bias):
                dwb = e.t() @ (xa * g)  # (C, Da): [dW | db | 0]
                dw = dwb[:, :D].to(w_dtype) if need_w else None
                db = dwb[:, D].to(b_dtype) if (need_b and ctx.has_bias) else None
        return dx, dw, db, None, None


def _augment(x: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """[x | 1 | 0] (N, Da) and [W | b | 0] (C, Da) in ``dtype``; Da = D (+1) rounded up to a
    multiple of 8, at least 16."""
    N, D = x.shape
    width = D + int(bias is not None)
    Da = max(16, -(-width // 8) * 8)
    if Da == D:
        return x.to(dtype), weight.to(dtype)
    xa = x.new_zeros(N, Da, dtype=dtype)
    wa = weight.new_zeros(weight.shape[0], Da, dtype=dtype)
    xa[:, :D] = x
    wa[:, :D] = weight
    if bias is not None:
        xa[:, D] = 1
        wa[:, D] = bias
    return xa, wa


def _row_chunks(z: Tensor, acc: torch.dtype):
    """Row ranges of z to process at once: all rows when z is already in ``acc``."""
    if z.dtype == acc:
        yield 0, z.shape[0]
        return
    step = max(1, _CHUNK_ELEMENTS // max(z.shape[1], 1))
    for r0 in range(0, z.shape[0], step):
        yield r0, min(r0 + step, z.shape[0])


def _recompute_tiny(nll: Tensor, xa: Tensor, wa: Tensor, t: Tensor) -> Tensor:
    """Rows whose target probability underflowed (nll > -log _TINY): exact log_softmax again."""
    tiny = nll > -math.log(_TINY)
    if not bool(tiny.any()):  # the usual case; one host sync
        return nll
    rows = tiny.nonzero().squeeze(1)
    logp = torch.log_softmax(xa.index_select(0, rows) @ wa.t(), dim=1, dtype=nll.dtype)  # (n, C)
    return nll.index_put((rows,), -logp.gather(1, t.index_select(0, rows)).squeeze(1))


def linear_nll(x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor) -> Tensor:
    """-log_softmax(x W^T + b)[target] per row, fused (see :class:`_LinearNLL`); autocast-aware."""
    return _LinearNLL.apply(x, weight, bias, target, _compute_dtype(x))


class FullSoftmax(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden (N, P), targets (N,) in [0, V) -> nll (N,), through the fused :func:`linear_nll`
        (at tiny size, 10k words, cross_entropy's log_softmax and its backward plus the fills and
        copies of (N, V) buffers were 20% of a training step)."""
        return linear_nll(hidden, self.proj.weight, self.proj.bias, targets)

    def log_probs(self, hidden: Tensor) -> Tensor:
        return F.log_softmax(self.proj(hidden), dim=-1)  # (N, V)


class AdaptiveSoftmax(nn.Module):
    """Parameters: ``head`` Linear(P, c_1 + n) and per cluster k ``tails[k]`` =
    Sequential(Linear(P, P // div**(k+1), bias=False), Linear(that, c_{k+1} - c_k))."""

    def __init__(self, dim: int, vocab_size: int, cutoffs: list[int], div_value: float):
        super().__init__()
        given, cutoffs = list(cutoffs), [c for c in cutoffs if c < vocab_size]
        if not cutoffs:
            from .config import adaptive_cutoff_error
            raise ValueError(adaptive_cutoff_error(given, vocab_size))
        self.cutoffs = cutoffs + [vocab_size]
        self.shortlist = cutoffs[0]
        n_clusters = len(cutoffs)
        self.head = nn.Linear(dim, self.shortlist + n_clusters)
        self.tails = nn.ModuleList()
        for k in range(n_clusters):
            hid = max(1, int(dim // (div_value ** (k + 1))))
            size = self.cutoffs[k + 1] - self.cutoffs[k]
            self.tails.append(nn.Sequential(nn.Linear(dim, hid, bias=False), nn.Linear(hid, size)))
        # Cluster boundaries for bucketize; not saved, rebuilt from the config.
        self.register_buffer("bounds", torch.tensor(cutoffs, dtype=torch.long), persistent=False)

    def nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden (N, P), targets (N,) in [0, V) -> nll (N,), each tail run only on its own rows.

        Rows are grouped by cluster with one sort; head words read their own head logit, tail
        words their cluster's head logit plus their logit within the cluster.
        """
        cluster = torch.bucketize(targets, self.bounds, right=True)  # (N,) 0 = head, k = tail k
        head_target = torch.where(cluster == 0, targets, self.shortlist + cluster - 1)  # (N,)
        nll = linear_nll(hidden, self.head.weight, self.head.bias, head_target)  # (N,)
        if len(self.tails) == 0 or targets.numel() == 0:
            return nll
        counts = torch.bincount(cluster, minlength=len(self.tails) + 1).tolist()  # one host sync
        if sum(counts[1:]) == 0:
            return nll
        order = torch.argsort(cluster, stable=True)  # (N,) rows grouped by cluster
        start = counts[0]
        for k, tail in enumerate(self.tails):
            n_k = counts[k + 1]
            if n_k == 0:
                continue
            rows = order[start:start + n_k]  # (n_k,)
            start += n_k
            h = tail[0](hidden.index_select(0, rows))  # (n_k, P / div**(k+1))
            local = targets.index_select(0, rows) - self.cutoffs[k]  # (n_k,)
            nll = nll.index_add(0, rows, linear_nll(h, tail[1].weight, tail[1].bias, local).to(nll.dtype))
        return nll

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
