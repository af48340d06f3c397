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
different lengths: their padding slots are masked, and a masked step leaves the state as it was
(``elmo_dist_kernels.lstmp_sequence_torch``), so a row that ends inside a window keeps its final
forward state through the windows after it, and its backward run begins at its own ``</S>``.

Memory: one window of token vectors and layer outputs, (B, window, .), whatever the length of
the line; each window's outputs go to a callback that writes them where they belong.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN
from elmo_dist.model.bilm import BiLMState


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


def _window_inputs(sentences: Sequence[Sequence[str]], a: int, b: int,
                   token_vectors: Callable[[list], Tensor], like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Framed slots [a, b) of every row -> token vectors x (B, w, P), mask (B, w) of the
    slots that hold a token or a boundary, and tokens (B, w) of those that hold a word."""
    B, w = len(sentences), b - a
    words, flat_index = [], []
    for r, s in enumerate(sentences):
        n = len(s)
        for slot in range(a, min(b, n + 2)):
            words.append(BOS_TOKEN if slot == 0 else EOS_TOKEN if slot == n + 1 else s[slot - 1])
            flat_index.append(r * w + slot - a)
    vectors = token_vectors(words)  # (N, P)
    x = like.new_zeros(B * w, vectors.shape[1])
    index = torch.tensor(flat_index, dtype=torch.long, device=x.device)
    x[index] = vectors.to(x.dtype)
    lengths = torch.tensor([len(s) for s in sentences], device=x.device)  # (B,)
    slot = torch.arange(a, b, device=x.device)  # (w,)
    mask = slot[None, :] < (lengths[:, None] + 2)  # (B, w)
    tokens = (slot[None, :] >= 1) & (slot[None, :] <= lengths[:, None])  # (B, w)
    return x.view(B, w, -1), mask, tokens


@torch.inference_mode()
def run_in_windows(bilm, sentences: Sequence[Sequence[str]], window: int,
                   token_vectors: Callable[[list], Tensor], emit: Callable[[WindowOutput], None],
                   state: Optional[BiLMState] = None) -> BiLMState:
    """Runs ``bilm`` (eval mode) over ``sentences`` (B token lists) in windows of ``window``
    framed slots (see the module docstring), calling ``emit`` for each window and direction:
    first the forward LM's windows left to right, then the backward LM's right to left.

    ``token_vectors(words)`` gives the character-CNN outputs (N, P) of a list of words
    (``<S>``/``</S>`` included), e.g. from the Embedder's cache. ``state``: where each row's
    LSTMs start (default zeros, as stateless ``BiLM.forward``). Returns the final state, as
    ``BiLM.forward`` would store it: forward after ``</S>``, backward after ``<S>``.
    """
    like = bilm.encoder.proj.weight
    spans = framed_windows(max(len(s) for s in sentences), window)
    final = []
    for d, (stack, order) in enumerate(((bilm.forward_lm, spans), (bilm.backward_lm, spans[::-1]))):
        carried = state[d] if state is not None else None
        for a, b in order:
            x, mask, tokens = _window_inputs(sentences, a, b, token_vectors, like)  # (B, w, P), (B, w) x2
            outputs, carried = stack(x, mask, carried)  # n_layers (B, w, P); state (L, B, .)
            lo, hi = max(a, 1), min(b, max(len(s) for s in sentences) + 1)  # slots of token positions
            if hi <= lo:
                continue  # a window of boundaries only (<S> alone, or </S> alone)
            layers = torch.stack([x, *outputs], dim=1)[:, :, lo - a:hi - a]  # (B, L+1, n, P)
            layers = layers * tokens[:, None, lo - a:hi - a, None]
            emit(WindowOutput(d, lo - 1, layers))
        final.append(carried)
    return BiLMState(*final)
