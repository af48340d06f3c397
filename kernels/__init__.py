"""elmo_dist_kernels: LSTM-with-projection (LSTMP) recurrences, imports torch (and triton) only.

Every implementation here exposes one function with the same contract, so the model's LSTM
layer can switch between them (``impl="torch"`` on CPU, ``impl="triton"`` on CUDA)::

    lstmp_sequence(xw, w_rec, w_proj, h0, c0, mask, cell_clip, proj_clip, reverse)
        -> (out (B, T, P), h_T (B, P), c_T (B, H))

    xw      (B, T, 4H)  input projection for all steps, ``x @ W_in + b``, gate order (i, f, o, j),
                        the forget bias (+1 in bilm-tf) already added to the f block
    w_rec   (P, 4H)     recurrent weights, gate order (i, f, o, j)
    w_proj  (H, P)      projection weights
    h0      (B, P)      initial projected state;  c0 (B, H) initial cell
    mask    (B, T) bool or None; False marks padding: the state passes through unchanged and
                        the output there is 0
    cell_clip, proj_clip  float or None (None: no clipping)
    reverse bool        run t = T-1 .. 0 (the backward LM); out[:, t] is still position t

Per step (t ascending, or descending when reverse)::

    z = xw[:, t] + h_prev @ w_rec                       # (B, 4H)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  j = tanh(z_j)
    c = clip(f * c_prev + i * j, cell_clip)             # (B, H)
    h = clip((o * tanh(c)) @ w_proj, proj_clip)         # (B, P)

Gradients flow to xw, w_rec, w_proj, h0 and c0.

The torch path also steps several directions together (``lstmp_steps_torch``: the same
recurrence with a leading direction axis, inputs in processing order), which the biLM uses for
its forward and backward LMs on CPU.
"""
from .lstmp_torch import lstmp_sequence as lstmp_sequence_torch
from .lstmp_torch import lstmp_steps as lstmp_steps_torch

__all__ = ["lstmp_sequence_torch", "lstmp_steps_torch", "triton_available"]


def triton_available() -> bool:
    """True when triton imports (the fused kernel in ``lstmp_triton`` needs it, and CUDA)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
