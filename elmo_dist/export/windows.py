"""Lines longer than a window: the exact one-pass biLM outputs, computed window by window.

A biLM's output at a token depends on the whole line (the forward LM on everything before it,
the backward LM on everything after it), so a long line cannot be cut into independent pieces
without changing its vectors. It can be *run* in pieces: the forward LM over windows
1, 2, ..., m and the backward LM over m, ..., 1, each window starting from the LSTM state
(h and c of every layer) that the previous window of the same direction ended with. That is
the recurrence of one pass over the whole line, so the outputs are those of one pass (up to
rounding: the input projections are matmuls of other shapes). Layer 0, the token vectors, is
per token and exact window by window; skip connections and clips act within a step, so they
need no state beyond (h, c).

Framing as ``BiLM.forward``: the line is ``<S> w1 .. wn </S>`` (n + 2 slots), the forward LM
starts from the given state (zeros when stateless) at ``<S>``, the backward LM at ``</S>``.
The windows cut the framed slots into pieces of ``window`` slots. Rows of a batch may have
different lengths; the steps run on the packed recurrence of ``packed_lstm`` (rows sorted by
length, longest first, no padding computed). A row's steps in a window, min(b, n + 2) - a,
never decrease with its length n, so one row order serves every window and the state tensors
keep it from window to window. A row with no step in a window keeps its state: going forward
it has ended, and its final state is carried through to the end; going backward (windows from
the last one) it has not begun yet, and its backward run starts at its own ``</S>`` from the
state it was given.

Memory: one window of token vectors and layer outputs, (B, window, .), whatever the length of
the line, plus the cache row of every framed slot (8 bytes a token); each window's outputs go
to a callback that writes them where they belong.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from elmo_dist.model.bilm import BiLMState
from elmo_dist.model.lstm import LSTMState

from .packed_lstm import PackedBiLM, Packing, State


class WindowOutput(NamedTuple):
    """One direction's half of every layer over a run of token positions (boundaries removed)."""
    direction: int  # 0: forward LM (columns :P of a layer), 1: backward LM (columns P:)
    start: int  # token position of layers[:, :, 0] (0-based, <S> not counted)
    layers: Tensor  # (B, L+1, n, P): layer 0 = token vectors, layer k = LSTM layer k; 0 past a row's end


def framed_windows(longest: int, window: int) -> list[tuple[int, int]]:
    """Slot ranges [a, b) of ``window`` slots covering a framed row of ``longest + 2`` slots."""
    if window < 1:
        raise ValueError(f"window must be >= 1 token; got {window}")
    slots = longest + 2
    return [(a, min(a + window, slots)) for a in range(0, slots, window)]


def _window_packing(framed: Tensor, a: int, b: int) -> tuple[Packing, Tensor, Tensor]:
    """framed (R,) slot counts (n + 2) of the rows in packed order (non-increasing) -> the packing
    of slots [a, b) and, per packed position, its row (in that order) and slot: (N,) each."""
    steps = (torch.clamp(framed, max=b) - a).clamp(min=0)  # (R,) each row's steps in the window
    counts = [int((steps > t).sum()) for t in range(int(steps[0]))]
    offsets = [0]
    for n in counts[:-1]:
        offsets.append(offsets[-1] + n)
    row = torch.cat([torch.arange(n) for n in counts])  # (N,) position in the packed order
    slot = torch.repeat_interleave(torch.arange(a, a + len(counts)), torch.tensor(counts))  # (N,)
    return Packing(list(range(len(framed))), counts, offsets), row, slot


def _to_packed(state: Optional[LSTMState], order: Tensor, packed: PackedBiLM, like: Tensor) -> State:
    """LSTMState (L, B, .) in batch order (None: zeros) -> per layer (h, C = 2c) in packed order."""
    if state is None:
        return [(like.new_zeros(len(order), packed.proj), like.new_zeros(len(order), packed.hidden))
                for _ in range(packed.n_layers)]
    return [(state.h[k][order].contiguous(), 2.0 * state.c[k][order]) for k in range(packed.n_layers)]


def _from_packed(state: State, order: Tensor) -> LSTMState:
    unsort = torch.argsort(order)
    return LSTMState(torch.stack([h[unsort] for h, _ in state]), torch.stack([0.5 * c[unsort] for _, c in state]))


@torch.inference_mode()
def run_in_windows(packed: PackedBiLM, slot_rows: Tensor, lengths: Tensor, lookup: Callable[[Tensor], Tensor],
                   window: int, emit: Callable[[WindowOutput], None], state: Optional[BiLMState] = None,
                   in_two_threads: Optional[Callable] = None) -> BiLMState:
    """Runs the biLM of ``packed`` over B framed rows in windows of ``window`` slots (see the
    module docstring), calling ``emit`` for each window of each direction: the forward LM's
    windows left to right, the backward LM's right to left.

    slot_rows (B, S): each framed slot's row in the token cache (``<S>``, the words, ``</S>``;
    0, the zero row, past a row's end); lengths (B,): tokens per row; ``lookup(rows)`` -> (N, P)
    token vectors. ``state``: where each row's LSTMs start (default zeros, as stateless
    ``BiLM.forward``). With ``in_two_threads`` (``PackedBiLM.in_two_threads``) the directions
    run at once, and ``emit`` is called from both threads. Returns the final state, as
    ``BiLM.forward`` stores it: forward after ``</S>``, backward after ``<S>``.
    """
    like = packed.stacks[0][0].w_rec
    B, L1, P = slot_rows.shape[0], packed.n_layers + 1, packed.proj
    order = torch.argsort(lengths, descending=True, stable=True)  # (B,) longest first, for every window
    framed = (lengths + 2)[order]  # (B,) slots per row, packed order
    spans = framed_windows(int(lengths.max()), window)
    rows_packed = slot_rows[order].to(like.device)  # (B, S)

    def direction(d: int) -> LSTMState:
        carried = _to_packed(state[d] if state is not None else None, order, packed, like)
        for a, b in (spans if d == 0 else spans[::-1]):
            packing, row, slot = _window_packing(framed, a, b)
            x = lookup(rows_packed[row, slot])  # (N, P)
            cell = packed.stacks[d][0]
            outs, carried = packed.run_direction(d, packing, lambda buf: torch.addmm(cell.bias, x, cell.w_in, out=buf),
                                                 carried)
            w = b - a
            layers = like.new_zeros(B * w, L1, P)  # rows in batch order
            pos = (order[row] * w + slot - a).to(like.device)  # (N,)
            word = ((slot >= 1) & (slot <= lengths[order[row]])).to(like.device)  # (N,) not a boundary
            layers[pos] = torch.stack([x, *outs], dim=1) * word[:, None, None]  # (N, L+1, P)
            lo, hi = max(a, 1), min(b, int(lengths.max()) + 1)  # slots holding token positions
            if hi > lo:  # else a window of boundaries only (<S> alone, or </S> alone)
                emit(WindowOutput(d, lo - 1, layers.view(B, w, L1, P).transpose(1, 2)[:, :, lo - a:hi - a]))
        return _from_packed(carried, order)

    if in_two_threads is not None:
        return BiLMState(*in_two_threads(lambda: direction(0), lambda: direction(1)))
    return BiLMState(direction(0), direction(1))
