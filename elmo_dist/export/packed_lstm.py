"""Stateless biLM inference over packed sequences: no padding computed, no masks, no graph.

Why a separate path: at inference with a zero initial state, the masked recurrence the model
uses for training (``elmo_dist_kernels.lstmp_sequence_torch``) computes every padding slot and
writes ~16 MB step buffers per layer at the ``small`` sizes. Here rows are sorted by length
(longest first) and packed time-major as in ``torch.nn.utils.rnn.PackedSequence``: step t holds
the first ``counts[t]`` rows, so each step runs on a contiguous prefix and finished (forward) or
not-yet-started (backward) rows cost nothing.

What never needs running (all exact, since every sentence starts from a zero state):
- Sentence boundaries. The forward LM reads <S> first and the backward LM </S>, so each layer's
  state after that step is a constant of the weights (``boundary_states``). And the forward
  LM's output at </S> (the backward LM's at <S>) feeds no exported position, since each
  direction only looks one way.
- A sentence's first step in each direction (its first word going forward, its last going
  backward): it starts from that constant state, so its states and outputs depend on the word
  alone, and ``first_step`` computes them once per word for a cache (``embedder.py``).
So a sentence of n tokens costs n - 1 steps per direction instead of n + 2 (11% fewer at the
20-30 token sentences of benchmarks/bench_embed.py, steps being ~90% of the work).

Math (docs/DESIGN.md; gate order i, j, f, o in the stored weights, forget bias +1 added here):
    z = x_t W_in + h W_rec + B + [0, 0, 1, 0];  c = clip(sig(f) c + sig(i) tanh(j));
    h = clip((sig(o) tanh(c)) W_P);  layer k >= 1 adds its input (use_skip_connections).
Arithmetic choices, exact in floating point, that save elementwise passes (a third of a step's
time is elementwise at M <= 32 rows): gates are reordered to (i, f, o, 2j) so one sigmoid
covers all four, with tanh(y) = 2 sig(2y) - 1 (torch 2.13's CPU tanh costs ~6x its sigmoid);
the cell state is kept as C = 2c, so tanh(c) = 2 sig(C) - 1 needs no scaling pass; and W_P is
stored negated, so that -o tanh(c) = o - 2 o sig(C) is a single addcmul.
The weights are copied when a :class:`PackedBiLM` is made: build a new one after changing the
biLM's weights.
"""
from __future__ import annotations

import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor


class Packing(NamedTuple):
    """Time-major packing of B rows sorted by length: step t = rows order[:counts[t]]."""
    order: list  # batch row of each sorted position (longest first; ties in batch order)
    counts: list  # active rows per step (non-increasing)
    offsets: list  # first packed index of each step

    @property
    def size(self) -> int:
        return self.offsets[-1] + self.counts[-1] if self.counts else 0


def pack_lengths(lengths: Sequence[int]) -> Packing:
    """Rows of length 0 are in ``order`` (last) but in no step."""
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
    """Gate blocks (i, j, f, o) -> (i, f, o, 2j) along the last dim (doubling is exact)."""
    i, j, f, o = w.chunk(4, dim=-1)
    return torch.cat([i, f, o, 2 * j], dim=-1).contiguous()


def _recurrence(xw: Tensor, h: Tensor, c: Tensor, w_rec: Tensor, w_proj_neg: Tensor, out: Tensor,
                counts: List[int], offsets: List[int], reverse: bool,
                cell_clip: Optional[float], proj_clip: Optional[float]) -> None:
    """Runs one LSTMP cell over packed steps (the module docstring's math), in place.

    xw (N, 4H): x W_in + B per packed position, gates (i, f, o, 2j); overwritten, each step's rows
    becoming that step's z (a fresh (n, 4H) tensor per step cost an allocation and a copy, ~40%
    of a step, measured). h (rows, P) and c (rows, H), holding C = 2c: the state, updated in
    place. w_proj_neg: -W_P (H, P). out (N, P): the new h of every packed position.
    """
    H = c.shape[1]
    steps = len(counts)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        n, start = counts[t], offsets[t]
        z = xw[start:start + n].addmm_(h[:n], w_rec).sigmoid_()  # (n, 4H): sig(i), sig(f), sig(o), sig(2j)
        i, f, o, g = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c_t = c[:n]  # forward: rows past their end drop out; backward: rows not begun keep their start
        c_t.mul_(f).addcmul_(i, g, value=4.0).sub_(i, alpha=2.0)  # C = f C + 2 i tanh(j)
        if cell_clip is not None:
            c_t.clamp_(-2.0 * cell_clip, 2.0 * cell_clip)
        m_neg = torch.addcmul(o, o, torch.sigmoid(c_t), value=-2.0)  # -o tanh(c): (n, H)
        h_t = out[start:start + n]
        torch.mm(m_neg, w_proj_neg, out=h_t)
        if proj_clip is not None:
            h_t.clamp_(-proj_clip, proj_clip)
        h[:n] = h_t


def _compiled_recurrence():
    """``_recurrence`` compiled by TorchScript, or the plain function where that is unavailable.

    Why TorchScript: a compiled function runs its whole loop without taking Python's GIL, while
    the plain one takes it around each of its ~10 ops a step. With the two directions in two
    threads (``PackedBiLM.in_two_threads``) that GIL handoff made each direction 12% slower than
    alone; compiled, 2-thread throughput went from 13.6k to 15.7k tokens/s (bench_embed.py setup,
    idle 2-core EPYC). Outputs are identical. torch.jit.script is deprecated in favour of
    torch.compile, which needs a C++ toolchain at run time; it still works in the pinned torch.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.script(_recurrence)
    except Exception:  # a torch without TorchScript: same results, slower with two threads
        return _recurrence


class _Cell(NamedTuple):
    w_in: Tensor  # (in, 4H), gates i, f, o, 2j
    w_rec: Tensor  # (P, 4H)
    bias: Tensor  # (4H,), forget bias included
    w_proj_neg: Tensor  # (H, P), -W_P


State = List[tuple]  # per layer (h (rows, P), C (rows, H)), C = 2c


class PackedBiLM:
    """The two LSTM stacks of a BiLM, run on packed sequences (see the module docstring)."""

    def __init__(self, bilm):
        cfg = bilm.config
        self.cell_clip, self.proj_clip = cfg.cell_clip, cfg.proj_clip
        self.skip = cfg.use_skip_connections
        self.hidden, self.proj, self.n_layers = cfg.lstm_dim, cfg.projection_dim, cfg.n_layers
        self.stacks = []
        self._pool = None
        self._buffers: dict[str, Tensor] = {}
        self.recurrence = _compiled_recurrence()
        with torch.no_grad():
            for stack in (bilm.forward_lm, bilm.backward_lm):
                cells = []
                for layer in stack.layers:
                    H = layer.hidden_dim
                    bias = layer.bias.detach().clone()
                    bias[2 * H:3 * H] += 1.0  # bilm-tf's forget bias, added at run time
                    cells.append(_Cell(_ifoj(layer.input_weight.detach()), _ifoj(layer.recurrent_weight.detach()),
                                       _ifoj(bias), -layer.proj_weight.detach()))
                self.stacks.append(cells)
            self.boundary_states = [self._boundary_state(bilm, d) for d in (0, 1)]

    @property
    def state_width(self) -> int:
        """Columns of a flattened per-layer state (``first_step``): L (P + H)."""
        return self.n_layers * (self.proj + self.hidden)

    def _boundary_state(self, bilm, direction: int) -> State:
        """Each layer's state after one step from a zero state on the boundary the direction
        reads first: <S> going forward, </S> going backward; (1, P) and (1, H) tensors."""
        from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN, word_to_char_ids
        token = BOS_TOKEN if direction == 0 else EOS_TOKEN
        weight = bilm.encoder.proj.weight
        x = bilm.encoder.encode_unique(torch.tensor([word_to_char_ids(token)], device=weight.device))  # (1, P)
        zero = [(x.new_zeros(1, self.proj), x.new_zeros(1, self.hidden))] * self.n_layers
        flat = self.first_step(x, self.input_projection(x, direction), direction, zero)
        return self.unflatten(flat)

    def first_step(self, x: Tensor, xw0: Tensor, direction: int, start: Optional[State] = None) -> Tensor:
        """One step of every layer for M words from ``start`` (default: the boundary state):
        x (M, P) token inputs, xw0 (M, 4H) their first-layer input projections (overwritten)
        -> the states after it, flattened: (M, L (P + H)), see :meth:`unflatten`."""
        M, parts, inp = x.shape[0], [], x
        start = start if start is not None else self.boundary_states[direction]
        for k, cell in enumerate(self.stacks[direction]):
            xw = xw0 if k == 0 else self.input_projection(inp, direction, k)
            h, c = start[k][0].expand(M, -1).clone(), start[k][1].expand(M, -1).clone()
            self.recurrence(xw, h, c, cell.w_rec, cell.w_proj_neg, h, [M], [0], False,
                            self.cell_clip, self.proj_clip)  # one step; h is written after its last read
            parts += [h, c]
            inp = h + inp if k > 0 and self.skip else h
        return torch.cat(parts, dim=1)

    def unflatten(self, flat: Tensor) -> State:
        """(M, L (P + H)) -> per layer (h (M, P), C (M, H)), views."""
        P, H = self.proj, self.hidden
        return [(flat[:, k * (P + H):k * (P + H) + P], flat[:, k * (P + H) + P:(k + 1) * (P + H)])
                for k in range(self.n_layers)]

    def layer_outputs(self, x: Tensor, state: State) -> list:
        """The layer outputs of a step from its token input x (M, P) and the state after it:
        h_k, plus the layer's input for k >= 1 with skip connections."""
        outs, inp = [], x
        for k, (h, _) in enumerate(state):
            out = h + inp if k > 0 and self.skip else h
            outs.append(out)
            inp = out
        return outs

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

    def _run_stack(self, d: int, packing: Packing, fill_xw0: Callable[[Tensor], Tensor], start: State,
                   on_done: Optional[Callable[[int, list], None]]) -> tuple[list, State]:
        """One direction's layers -> outputs (fresh tensors; xw lives in a scratch buffer) and the
        state after the run of the rows that had a step (the first ``counts[0]``)."""
        N, rows = packing.size, (packing.counts[0] if packing.counts else 0)
        like = self.stacks[d][0].w_rec
        inp, outs, states = None, [], []
        for k, cell in enumerate(self.stacks[d]):
            xw = self.buffer(f"xw{d}", N, cell.w_in.shape[1], like)  # (N, 4H)
            if k == 0:
                fill_xw0(xw)
            else:
                torch.addmm(cell.bias, inp, cell.w_in, out=xw)
            h, c = ((s.expand(rows, -1) if s.shape[0] == 1 else s[:rows]).clone() for s in start[k])  # (rows, P), (rows, H)
            out = like.new_empty(N, self.proj)
            self.recurrence(xw, h, c, cell.w_rec, cell.w_proj_neg, out, packing.counts, packing.offsets, d == 1,
                            self.cell_clip, self.proj_clip)
            if k > 0 and self.skip:
                out += inp
            outs.append(out)
            states.append((h, c))
            inp = out
        if on_done is not None:
            on_done(d, outs)
        return outs, states

    def run_direction(self, d: int, packing: Packing, fill_xw0: Callable[[Tensor], Tensor],
                      start: State) -> tuple[list, State]:
        """Direction d over one packing from ``start`` (per layer h (R, P) and C = 2c (R, H) of all
        R rows, in ``packing.order``) -> n_layers packed outputs (N, P) and the state after the
        run, (R, .) per layer; rows with no step keep their start. For carrying state from one
        window of a long line to the next (``windows.py``)."""
        outs, moved = self._run_stack(d, packing, fill_xw0, start, None)
        rows = packing.counts[0] if packing.counts else 0
        final = [(torch.cat([h, h0[rows:]]), torch.cat([c, c0[rows:]])) for (h, c), (h0, c0) in zip(moved, start)]
        return outs, final

    def run(self, packing: Packing, fill_xw0: Sequence[Callable[[Tensor], Tensor]],
            start: Optional[Sequence[State]] = None, parallel: bool = False,
            on_done: Optional[Callable[[int, list], None]] = None) -> list:
        """Both directions over one packing of N positions -> per direction, n_layers packed
        outputs (N, P). Sentence boundaries are not part of the packing.

        ``fill_xw0[d](buffer)`` fills an (N, 4H) buffer with direction d's first-layer input
        projections x W_in + B (from a cache, say). ``start[d]``: per layer, the state every row
        starts from, (1, .) or (rows, .) in packed row order; default ``boundary_states``.
        ``on_done(d, outputs)`` is called as direction d finishes. Both callbacks run in the
        direction's own thread when ``parallel`` (the two directions at once, see
        :meth:`in_two_threads`), so that their work overlaps the other direction's.
        """
        start = start if start is not None else self.boundary_states
        first, second = ((lambda: self._run_stack(0, packing, fill_xw0[0], start[0], on_done)[0]),
                         (lambda: self._run_stack(1, packing, fill_xw0[1], start[1], on_done)[0]))
        if parallel:
            return list(self.in_two_threads(first, second, self.stacks[0][0].w_rec.device))
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
