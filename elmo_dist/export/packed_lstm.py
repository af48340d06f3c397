"""Stateless biLM inference over packed sequences: no padding computed, no masks, no graph.

Why a separate path: at inference with a zero initial state, the masked recurrence the model
uses for training (``elmo_dist_kernels.lstmp_sequence_torch``) computes every padding slot and
writes ~16 MB step buffers per layer at the ``small`` sizes. Here rows are sorted by length
(longest first) and packed time-major as in ``torch.nn.utils.rnn.PackedSequence``: step t holds
the first ``counts[t]`` rows, so each step runs on a contiguous prefix and finished (forward) or
not-yet-started (backward) rows cost nothing. Measured on 2 shared EPYC cores, 1 thread, batches
of 32 PTB sentences of 20-30 tokens: ~2x faster than ``BiLM.run_stacks`` (142-212 vs 293-365 ms
a batch at the ``small`` sizes); outputs equal to ~3e-7 (benchmarks/bench_embed.py checks).

Math (DESIGN.md; gate order i, j, f, o in the stored weights, forget bias +1 added here):
    z = x_t W_in + h W_rec + B + [0, 0, 1, 0];  c = clip(sig(f) c + sig(i) tanh(j));
    h = clip((sig(o) tanh(c)) W_P);  layer k >= 1 adds its input (use_skip_connections).
The weights are copied (reordered to i, f, o, j so one sigmoid covers 3H) when a
:class:`PackedBiLM` is made: build a new one after changing the biLM's weights.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor


class Packing(NamedTuple):
    """Time-major packing of B rows sorted by length: step t = rows order[:counts[t]]."""
    order: list  # batch row of each sorted position
    counts: list  # active rows per step (non-increasing)
    offsets: list  # first packed index of each step


def pack_lengths(lengths: Sequence[int]) -> Packing:
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    longest = lengths[order[0]] if order else 0
    counts, offsets, n, total = [], [], len(order), 0
    for t in range(longest):
        while n and lengths[order[n - 1]] <= t:
            n -= 1
        counts.append(n)
        offsets.append(total)
        total += n
    return Packing(order, counts, offsets)


def _ifoj(w: Tensor) -> Tensor:
    """Gate blocks (i, j, f, o) -> (i, f, o, 2j) along the last dim.

    j is doubled (exact in floating point) so that one sigmoid covers all four blocks:
    tanh(x) = 2 sigmoid(2x) - 1. In torch 2.13's CPU kernels tanh costs ~9x sigmoid per element
    (121 vs 14 us on a (32, 1024) tensor), a third of the elementwise time of a step.
    """
    i, j, f, o = w.chunk(4, dim=-1)
    return torch.cat([i, f, o, 2 * j], dim=-1).contiguous()


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1 in a new tensor (see _ifoj); absolute error ~1e-7."""
    return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)


class _Cell(NamedTuple):
    w_in: Tensor  # (in, 4H), gates i, f, o, 2j
    w_rec: Tensor  # (P, 4H)
    bias: Tensor  # (4H,), forget bias included
    w_proj: Tensor  # (H, P)


class PackedBiLM:
    """The two LSTM stacks of a BiLM, run on packed sequences (see the module docstring)."""

    def __init__(self, bilm):
        cfg = bilm.config
        self.cell_clip, self.proj_clip = cfg.cell_clip, cfg.proj_clip
        self.skip = cfg.use_skip_connections
        self.hidden, self.proj = cfg.lstm_dim, cfg.projection_dim
        self.stacks = []
        self._pool = None
        self._buffers: dict[str, Tensor] = {}
        with torch.no_grad():
            for stack in (bilm.forward_lm, bilm.backward_lm):
                cells = []
                for layer in stack.layers:
                    H = layer.hidden_dim
                    bias = layer.bias.detach().clone()
                    bias[2 * H:3 * H] += 1.0  # bilm-tf's forget bias, added at run time
                    cells.append(_Cell(_ifoj(layer.input_weight.detach()), _ifoj(layer.recurrent_weight.detach()),
                                       _ifoj(bias), layer.proj_weight.detach().contiguous()))
                self.stacks.append(cells)

    def buffer(self, name: str, rows: int, cols: int, like: Tensor) -> Tensor:
        """A (rows, cols) view of a scratch tensor kept between calls, grown as needed.

        Fresh multi-MB tensors every batch cost page faults (2M of them, 16% of the CPU time of
        a 10k-sentence export); reusing a few named buffers avoids them. Names must not be
        shared by work running at the same time.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1] != cols or buf.shape[0] < rows or buf.dtype != like.dtype \
                or buf.device != like.device:
            buf = like.new_empty(max(rows, 1024), cols)
            self._buffers[name] = buf
        return buf[:rows]

    def input_projection(self, x: Tensor, direction: int, layer: int = 0) -> Tensor:
        """x (N, in) -> x W_in + B (N, 4H) for one cell: the part of z that needs no state."""
        cell = self.stacks[direction][layer]
        return torch.addmm(cell.bias, x, cell.w_in)

    def _run_cell(self, xw: Tensor, packing: Packing, cell: _Cell, reverse: bool, out: Tensor) -> Tensor:
        """xw (N, 4H) packed -> out (N, P) packed, from a zero state."""
        H, P = self.hidden, self.proj
        rows = packing.counts[0] if packing.counts else 0
        h = xw.new_zeros(rows, P)
        c = xw.new_zeros(rows, H)
        steps = range(len(packing.counts))
        for t in (reversed(steps) if reverse else steps):
            n, start = packing.counts[t], packing.offsets[t]
            z = torch.addmm(xw[start:start + n], h[:n], cell.w_rec)  # (n, 4H), j block doubled
            z.sigmoid_()
            z[:, 3 * H:].mul_(2).sub_(1)  # tanh(j)
            c_t = c[:n]  # forward: rows past their end drop out; backward: rows not begun stay 0
            c_t.mul_(z[:, H:2 * H]).addcmul_(z[:, :H], z[:, 3 * H:])
            if self.cell_clip is not None:
                c_t.clamp_(-self.cell_clip, self.cell_clip)
            m = _tanh(c_t).mul_(z[:, 2 * H:3 * H])  # (n, H)
            h_t = out[start:start + n]
            torch.mm(m, cell.w_proj, out=h_t)
            if self.proj_clip is not None:
                h_t.clamp_(-self.proj_clip, self.proj_clip)
            h[:n] = h_t
        return out

    def _run_stack(self, d: int, x: Tensor, packing: Packing, layer0_xw: Optional[Tensor]) -> list:
        """One direction's layers; outputs are fresh tensors, xw lives in a scratch buffer."""
        inp, outs = x, []
        for k, cell in enumerate(self.stacks[d]):
            if k == 0 and layer0_xw is not None:
                xw = layer0_xw
            else:
                xw = torch.addmm(cell.bias, inp, cell.w_in,
                                 out=self.buffer(f"xw{d}", x.shape[0], cell.w_in.shape[1], x))  # (N, 4H)
            out = self._run_cell(xw, packing, cell, d == 1, x.new_empty(x.shape[0], self.proj))
            if k > 0 and self.skip:
                out += inp
            outs.append(out)
            inp = out
        return outs

    def run(self, x: Tensor, packing: Packing, layer0_xw: Optional[Sequence[Tensor]] = None,
            parallel: bool = False) -> list:
        """x (N, P) packed token embeddings -> per direction, n_layers packed outputs (N, P).

        ``layer0_xw`` may hold both directions' first-layer input projections, precomputed.
        ``parallel``: the two directions run at once (see :meth:`in_two_threads`).
        """
        xw = layer0_xw if layer0_xw is not None else (None, None)
        first, second = (lambda: self._run_stack(0, x, packing, xw[0])), (lambda: self._run_stack(1, x, packing, xw[1]))
        if parallel:
            return list(self.in_two_threads(first, second, x.device))
        return [first(), second()]

    def in_two_threads(self, first: Callable, second: Callable, device: torch.device) -> tuple:
        """(first(), second()), ``second`` in a worker thread under inference mode with the same
        intra-op thread count as the caller. Off CPU, one after the other.

        Why: a step is a few small matmuls (M <= 32 rows at batch 32), which split poorly across
        intra-op threads and stall at every op's barrier when a core is busy elsewhere, while the
        forward and backward LSTMs are independent. The caller (``Embedder``) sets half of its
        threads per side.
        """
        if device.type != "cpu":
            return first(), second()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="elmo-dist-embed")
        threads = torch.get_num_threads()

        def worker():
            torch.set_num_threads(threads)  # OpenMP's thread count is per thread
            with torch.inference_mode():
                return second()

        pending = self._pool.submit(worker)
        a = first()
        return a, pending.result()
