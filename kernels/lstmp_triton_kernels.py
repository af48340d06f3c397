"""Triton kernels for one LSTMP step, forward and backward (launched by lstmp_triton_launch.py).

Notation (contract in ``elmo_dist_kernels/__init__.py``): B batch rows, H cell units, P projection
units, gate order (i, f, o, j). States and saved activations are fp32; weights and the
user-facing tensors (xw, out, dxw) are fp32 or bf16, and every ``tl.dot`` accumulates in fp32.
Buffers indexed by step ``s`` are in processing order (s = 0 is the first step run, which is
t = T-1 when reverse), so slot s holds the state before step s and slot s + 1 the state after it.

Why two kernels per step and not one: the projection ``h = m @ w_proj`` needs all H units of a
row of m, while the cell kernel is tiled over H to spread ``w_rec`` (P x 4H, 16 MB in bf16 at
H=4096) over every SM. Fusing would mean one program owning whole rows (a handful of programs
at B=128) or a grid-wide barrier; a second launch is cheaper, and CUDA graphs hide its cost.
The same holds in backward (dh_prev = dz @ w_rec^T needs all 4H gate gradients of a row).
The two matmuls with a narrow output and a long reduction (m @ w_proj: N = P, K = H; and
dz @ w_rec^T: N = P, K = 4H) would fill only cdiv(B, BLOCK_B) * cdiv(P, BLOCK_P) programs, 16
at the original size, so they split K over more programs and a small reduce kernel sums the
fp32 partials and applies the epilogue (a third launch per step, only when SPLIT_K > 1).

Offsets into the (B, T, N) tensors (xw, out, dout, dz) are int64: B*T*4H passes 2^31 at long
sequences. Every other offset stays int32: it indexes one step's (B, 4H) slice, a weight or the
split-K partials, each bounded below 2^31 elements by the input check in lstmp_triton.py.
Clips keep NaN (``_clip``), so a diverged state shows as NaN on a GPU as it does in torch.

There is no ``tl.tanh`` under the Triton interpreter, so tanh is ``2 * sigmoid(2x) - 1``.
Under the interpreter (triton 3.9) ``tl.dot`` on bf16 multiplies the raw uint16 bit patterns, so
the launchers pass ``DOT_DTYPE=fp32`` there; operands are rounded to bf16 before the upcast, so
the products equal those of bf16 tensor cores. On a GPU, DOT_DTYPE is the weight dtype. (The
interpreter also truncates fp32 -> bf16 casts where a GPU rounds to nearest even.) Only
builtins of triton.language are used (``tl.full``, not the @jit ``tl.zeros``), so these kernels
also interpret when triton itself was imported before TRITON_INTERPRET=1 was set.
"""
import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _clip(x, clip):
    """x clipped to [-clip, clip], NaN kept: plain tl.minimum / tl.maximum return the other
    operand for a NaN on a GPU (PTX min/max), which would turn a diverged state into +-clip."""
    x = tl.maximum(x, -clip, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(x, clip, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _seq_rows(rows, stride_b, t, stride_t):
    """Offsets (int64) of rows' time-t slices in a (B, T, N) tensor (xw, out, dout, dz): B*T*N
    passes 2^31 (T > 1024 at B = 128, H = 4096), where int32 offsets would wrap."""
    return rows.to(tl.int64) * stride_b + t * stride_t


@triton.jit
def _dot(a, b, acc, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation; DOT_DTYPE is the operand dtype (see module docstring)."""
    return tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)


@triton.jit(do_not_specialize=["t"])
def _lstmp_fwd_cell_kernel(
    xw_ptr, w_rec_ptr, h_prev_ptr, c_prev_ptr, keep_ptr,
    gates_ptr, c_ptr, m_ptr,
    B, H, P, t, stride_xw_b, stride_xw_t, stride_keep_b, stride_keep_t, cell_clip,
    HAS_MASK: tl.constexpr, HAS_CELL_CLIP: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Cell half of forward step s (time t): gates, cell update, m.

    z = xw[:, t] + h_prev @ w_rec                    z: (B, 4H); h_prev (B, P) fp32; w_rec (P, 4H)
    i, f, o = sigmoid(z_i, z_f, z_o); j = tanh(z_j)
    c = clip(f * c_prev + i * j, cell_clip)          where keep[:, t]; else c = c_prev
    m = o * tanh(c)                                  (B, H), stored in the weight dtype

    Writes gates (B, 4H) fp32 (activated i, f, o, j), c (B, H) fp32, m (B, H).
    Grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)): a program owns a BLOCK_B x BLOCK_H tile of cell
    units and keeps the four gate accumulators of that tile, looping over K = P in BLOCK_K chunks;
    h_prev is cast to the weight dtype for the dot (bf16 tensor cores, fp32 accumulation).
    """
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < B
    col_ok = cols < H
    tile_ok = row_ok[:, None] & col_ok[None, :]
    four_h = 4 * H

    acc_i = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    acc_f = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    acc_o = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    acc_j = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    for k0 in range(0, P, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < P
        h = tl.load(h_prev_ptr + rows[:, None] * P + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        h = h.to(w_rec_ptr.dtype.element_ty)
        w_ptrs = w_rec_ptr + ks[:, None] * four_h + cols[None, :]
        w_ok = k_ok[:, None] & col_ok[None, :]
        acc_i = _dot(h, tl.load(w_ptrs, mask=w_ok, other=0.0), acc_i, DOT_DTYPE, DOT_PRECISION)
        acc_f = _dot(h, tl.load(w_ptrs + H, mask=w_ok, other=0.0), acc_f, DOT_DTYPE, DOT_PRECISION)
        acc_o = _dot(h, tl.load(w_ptrs + 2 * H, mask=w_ok, other=0.0), acc_o, DOT_DTYPE, DOT_PRECISION)
        acc_j = _dot(h, tl.load(w_ptrs + 3 * H, mask=w_ok, other=0.0), acc_j, DOT_DTYPE, DOT_PRECISION)

    xw_ptrs = xw_ptr + _seq_rows(rows, stride_xw_b, t, stride_xw_t)[:, None] + cols[None, :]
    i = _sigmoid(acc_i + tl.load(xw_ptrs, mask=tile_ok, other=0.0).to(tl.float32))
    f = _sigmoid(acc_f + tl.load(xw_ptrs + H, mask=tile_ok, other=0.0).to(tl.float32))
    o = _sigmoid(acc_o + tl.load(xw_ptrs + 2 * H, mask=tile_ok, other=0.0).to(tl.float32))
    j = _tanh(acc_j + tl.load(xw_ptrs + 3 * H, mask=tile_ok, other=0.0).to(tl.float32))

    state_offs = rows[:, None] * H + cols[None, :]
    c_prev = tl.load(c_prev_ptr + state_offs, mask=tile_ok, other=0.0)
    c = f * c_prev + i * j
    if HAS_CELL_CLIP:
        c = _clip(c, cell_clip)
    if HAS_MASK:
        keep = tl.load(keep_ptr + rows * stride_keep_b + t * stride_keep_t, mask=row_ok, other=0)
        c = tl.where(keep[:, None] != 0, c, c_prev)
    # Padded rows get an m too; backward multiplies it by a zero dh_raw, so it never counts.
    m = o * _tanh(c)

    gate_offs = rows[:, None] * four_h + cols[None, :]
    tl.store(gates_ptr + gate_offs, i, mask=tile_ok)
    tl.store(gates_ptr + gate_offs + H, f, mask=tile_ok)
    tl.store(gates_ptr + gate_offs + 2 * H, o, mask=tile_ok)
    tl.store(gates_ptr + gate_offs + 3 * H, j, mask=tile_ok)
    tl.store(c_ptr + state_offs, c, mask=tile_ok)
    tl.store(m_ptr + state_offs, m.to(m_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _proj_epilogue(r, rows, cols, h_prev_ptr, keep_ptr, h_ptr, out_ptr, B, P, t,
                   stride_out_b, stride_out_t, stride_keep_b, stride_keep_t, proj_clip,
                   HAS_MASK: tl.constexpr, HAS_PROJ_CLIP: tl.constexpr):
    """From the raw projection tile r: clip, then the state h (fp32) and out[:, t] (masked)."""
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols < P)[None, :]
    if HAS_PROJ_CLIP:
        r = _clip(r, proj_clip)
    state_offs = rows[:, None] * P + cols[None, :]
    h = r
    out = r
    if HAS_MASK:
        keep = tl.load(keep_ptr + rows * stride_keep_b + t * stride_keep_t, mask=row_ok, other=0)
        keep = keep[:, None] != 0
        h = tl.where(keep, r, tl.load(h_prev_ptr + state_offs, mask=tile_ok, other=0.0))
        out = tl.where(keep, r, 0.0)
    tl.store(h_ptr + state_offs, h, mask=tile_ok)
    out_ptrs = out_ptr + _seq_rows(rows, stride_out_b, t, stride_out_t)[:, None] + cols[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit(do_not_specialize=["t"])
def _lstmp_fwd_proj_kernel(
    m_ptr, w_proj_ptr, h_prev_ptr, keep_ptr, h_ptr, out_ptr, partial_ptr,
    B, H, P, t, k_chunk, stride_out_b, stride_out_t, stride_keep_b, stride_keep_t, proj_clip,
    HAS_MASK: tl.constexpr, HAS_PROJ_CLIP: tl.constexpr, SPLIT_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Projection half of forward step s (time t).

    r = clip(m @ w_proj, proj_clip)                  m (B, H); w_proj (H, P); r (B, P)
    h = r where keep[:, t] else h_prev               (B, P) fp32, the state for the next step
    out[:, t] = r where keep[:, t] else 0            (B, T, P) in the weight dtype

    Grid (cdiv(B, BLOCK_B), cdiv(P, BLOCK_P), SPLIT_K). The output is narrow (P) and the
    reduction long (H), so on its own the grid would leave most SMs idle: split-K gives program
    (.., .., s) the rows k_chunk * s .. k_chunk * (s + 1) of w_proj, and it writes its partial
    sum to partial[s] (SPLIT_K, B, P) fp32 for _lstmp_fwd_proj_reduce_kernel. With SPLIT_K == 1
    the program finishes the step itself.
    """
    pid_b = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_s = tl.program_id(2)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = rows < B
    col_ok = cols < P

    acc = tl.full((BLOCK_B, BLOCK_P), 0.0, tl.float32)
    k_start = pid_s * k_chunk
    for k0 in range(k_start, tl.minimum(k_start + k_chunk, H), BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        m = tl.load(m_ptr + rows[:, None] * H + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_proj_ptr + ks[:, None] * P + cols[None, :], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _dot(m, w, acc, DOT_DTYPE, DOT_PRECISION)
    if SPLIT_K == 1:
        _proj_epilogue(acc, rows, cols, h_prev_ptr, keep_ptr, h_ptr, out_ptr, B, P, t,
                       stride_out_b, stride_out_t, stride_keep_b, stride_keep_t, proj_clip, HAS_MASK, HAS_PROJ_CLIP)
    else:
        tl.store(partial_ptr + pid_s * B * P + rows[:, None] * P + cols[None, :], acc,
                 mask=row_ok[:, None] & col_ok[None, :])


@triton.jit(do_not_specialize=["t"])
def _lstmp_fwd_proj_reduce_kernel(
    partial_ptr, h_prev_ptr, keep_ptr, h_ptr, out_ptr,
    B, P, t, stride_out_b, stride_out_t, stride_keep_b, stride_keep_t, proj_clip,
    HAS_MASK: tl.constexpr, HAS_PROJ_CLIP: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """r = sum_s partial[s], then the epilogue of _lstmp_fwd_proj_kernel (clip, mask, h, out).
    Grid (cdiv(B, BLOCK_B), cdiv(P, BLOCK_P))."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    tile_ok = (rows < B)[:, None] & (cols < P)[None, :]
    offs = rows[:, None] * P + cols[None, :]
    r = tl.full((BLOCK_B, BLOCK_P), 0.0, tl.float32)
    for s in tl.static_range(SPLIT_K):
        r += tl.load(partial_ptr + s * B * P + offs, mask=tile_ok, other=0.0)
    _proj_epilogue(r, rows, cols, h_prev_ptr, keep_ptr, h_ptr, out_ptr, B, P, t,
                   stride_out_b, stride_out_t, stride_keep_b, stride_keep_t, proj_clip, HAS_MASK, HAS_PROJ_CLIP)


@triton.jit(do_not_specialize=["t"])
def _lstmp_bwd_cell_kernel(
    dh_ptr, dout_ptr, h_ptr, keep_ptr, w_proj_ptr, gates_ptr, c_ptr, c_prev_ptr,
    dc_ptr, dz_ptr, dh_raw_ptr,
    B, H, P, t, stride_dout_b, stride_dout_t, stride_keep_b, stride_keep_t,
    stride_dz_b, stride_dz_t, cell_clip, proj_clip,
    HAS_MASK: tl.constexpr, HAS_CELL_CLIP: tl.constexpr, HAS_PROJ_CLIP: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Backward of step s (time t) up to the gate pre-activations.

    dh_raw = (dh + dout[:, t]) * (|h| < proj_clip) * keep[:, t]         (B, P); h = state after s
    dm = dh_raw @ w_proj^T                                              (B, H)
    dc_c = dc + dm * o * (1 - tanh(c)^2);  dc_raw = dc_c * (|c| < cell_clip)
    dz_i = dc_raw * j * i(1-i);  dz_f = dc_raw * c_prev * f(1-f)
    dz_o = dm * tanh(c) * o(1-o);  dz_j = dc_raw * i * (1-j^2)           dz (B, 4H) -> dxw[:, t]
    dc <- dc_raw * f on kept rows, unchanged on padded rows (in place, fp32)

    A clip passes the gradient where |value| < clip: a stored value equal to +-clip was clipped.
    Grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)); the K = P loop rebuilds dh_raw chunk by chunk
    (cheap, elementwise) and the programs with pid_h == 0 also store it, in the weight dtype,
    for dW_proj. dh itself is updated by the next kernel, so reading it here is race free.
    """
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    # (BLOCK_B,) pointers to row b's dz[:, t], made before the K loop: made after it, beside the
    # int64 dout offsets inside it, ptxas 13.4 spilled 4 bytes in fp32 at the original size.
    dz_row = dz_ptr + _seq_rows(rows, stride_dz_b, t, stride_dz_t)
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < B
    col_ok = cols < H
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if HAS_MASK:
        keep = tl.load(keep_ptr + rows * stride_keep_b + t * stride_keep_t, mask=row_ok, other=0) != 0
    else:
        keep = row_ok

    dm = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    for k0 in range(0, P, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < P
        chunk_ok = row_ok[:, None] & k_ok[None, :]
        offs = rows[:, None] * P + ks[None, :]
        g = tl.load(dh_ptr + offs, mask=chunk_ok, other=0.0)
        g += tl.load(dout_ptr + _seq_rows(rows, stride_dout_b, t, stride_dout_t)[:, None] + ks[None, :],
                     mask=chunk_ok, other=0.0).to(tl.float32)
        if HAS_PROJ_CLIP:
            h = tl.load(h_ptr + offs, mask=chunk_ok, other=0.0)
            g = tl.where(tl.abs(h) < proj_clip, g, 0.0)
        g = tl.where(keep[:, None], g, 0.0).to(w_proj_ptr.dtype.element_ty)
        if pid_h == 0:
            tl.store(dh_raw_ptr + offs, g, mask=chunk_ok)
        w_t = tl.load(w_proj_ptr + cols[None, :] * P + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                      other=0.0)  # (BLOCK_K, BLOCK_H) tile of w_proj^T
        dm = _dot(g, w_t, dm, DOT_DTYPE, DOT_PRECISION)

    four_h = 4 * H
    gate_offs = rows[:, None] * four_h + cols[None, :]
    i = tl.load(gates_ptr + gate_offs, mask=tile_ok, other=0.0)
    f = tl.load(gates_ptr + gate_offs + H, mask=tile_ok, other=0.0)
    o = tl.load(gates_ptr + gate_offs + 2 * H, mask=tile_ok, other=0.0)
    j = tl.load(gates_ptr + gate_offs + 3 * H, mask=tile_ok, other=0.0)
    state_offs = rows[:, None] * H + cols[None, :]
    c = tl.load(c_ptr + state_offs, mask=tile_ok, other=0.0)
    c_prev = tl.load(c_prev_ptr + state_offs, mask=tile_ok, other=0.0)
    dc_next = tl.load(dc_ptr + state_offs, mask=tile_ok, other=0.0)

    tc = _tanh(c)
    dc = dc_next + dm * o * (1.0 - tc * tc)
    if HAS_CELL_CLIP:
        dc = tl.where(tl.abs(c) < cell_clip, dc, 0.0)
    kept = keep[:, None]
    dz_i = tl.where(kept, dc * j * i * (1.0 - i), 0.0)
    dz_f = tl.where(kept, dc * c_prev * f * (1.0 - f), 0.0)
    dz_o = tl.where(kept, dm * tc * o * (1.0 - o), 0.0)
    dz_j = tl.where(kept, dc * i * (1.0 - j * j), 0.0)
    tl.store(dc_ptr + state_offs, tl.where(kept, dc * f, dc_next), mask=tile_ok)

    out_ty = dz_ptr.dtype.element_ty
    dz_ptrs = dz_row[:, None] + cols[None, :]
    tl.store(dz_ptrs, dz_i.to(out_ty), mask=tile_ok)
    tl.store(dz_ptrs + H, dz_f.to(out_ty), mask=tile_ok)
    tl.store(dz_ptrs + 2 * H, dz_o.to(out_ty), mask=tile_ok)
    tl.store(dz_ptrs + 3 * H, dz_j.to(out_ty), mask=tile_ok)


@triton.jit(do_not_specialize=["t"])
def _lstmp_bwd_rec_kernel(
    dz_ptr, w_rec_ptr, keep_ptr, dh_ptr, partial_ptr,
    B, H, P, t, k_chunk, stride_dz_b, stride_dz_t, stride_keep_b, stride_keep_t,
    HAS_MASK: tl.constexpr, SPLIT_K: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Carried projection gradient through step s (time t).

    dh <- dz @ w_rec^T on kept rows; unchanged on padded rows     dz (B, 4H) = dxw[:, t]; dh (B, P) fp32

    Grid (cdiv(B, BLOCK_B), cdiv(P, BLOCK_P), SPLIT_K), split-K over K = 4H as in
    _lstmp_fwd_proj_kernel: partial sums go to partial (SPLIT_K, B, P) fp32 for
    _lstmp_bwd_rec_reduce_kernel, or, with SPLIT_K == 1, straight into dh (each program owns its
    dh tile, so the in-place update is race free).
    """
    pid_b = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_s = tl.program_id(2)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = rows < B
    col_ok = cols < P
    tile_ok = row_ok[:, None] & col_ok[None, :]
    four_h = 4 * H

    acc = tl.full((BLOCK_B, BLOCK_P), 0.0, tl.float32)
    dz_rows = _seq_rows(rows, stride_dz_b, t, stride_dz_t)
    k_start = pid_s * k_chunk
    for k0 in range(k_start, tl.minimum(k_start + k_chunk, four_h), BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < four_h
        dz = tl.load(dz_ptr + dz_rows[:, None] + ks[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_t = tl.load(w_rec_ptr + cols[None, :] * four_h + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                      other=0.0)  # (BLOCK_K, BLOCK_P) tile of w_rec^T
        acc = _dot(dz, w_t, acc, DOT_DTYPE, DOT_PRECISION)

    offs = rows[:, None] * P + cols[None, :]
    if SPLIT_K == 1:
        if HAS_MASK:
            keep = tl.load(keep_ptr + rows * stride_keep_b + t * stride_keep_t, mask=row_ok, other=0)
            acc = tl.where(keep[:, None] != 0, acc, tl.load(dh_ptr + offs, mask=tile_ok, other=0.0))
        tl.store(dh_ptr + offs, acc, mask=tile_ok)
    else:
        tl.store(partial_ptr + pid_s * B * P + offs, acc, mask=tile_ok)


@triton.jit(do_not_specialize=["t"])
def _lstmp_bwd_rec_reduce_kernel(
    partial_ptr, keep_ptr, dh_ptr, B, P, t, stride_keep_b, stride_keep_t,
    HAS_MASK: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dh <- sum_s partial[s] on kept rows; unchanged on padded rows. Grid (cdiv(B, BLOCK_B),
    cdiv(P, BLOCK_P))."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = rows < B
    tile_ok = row_ok[:, None] & (cols < P)[None, :]
    offs = rows[:, None] * P + cols[None, :]
    acc = tl.full((BLOCK_B, BLOCK_P), 0.0, tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(partial_ptr + s * B * P + offs, mask=tile_ok, other=0.0)
    if HAS_MASK:
        keep = tl.load(keep_ptr + rows * stride_keep_b + t * stride_keep_t, mask=row_ok, other=0)
        acc = tl.where(keep[:, None] != 0, acc, tl.load(dh_ptr + offs, mask=tile_ok, other=0.0))
    tl.store(dh_ptr + offs, acc, mask=tile_ok)
