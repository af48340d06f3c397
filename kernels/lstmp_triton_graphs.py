"""CUDA-graph replay of the Triton LSTMP step loops (CUDA only).

Eagerly, a layer costs 2-3 kernel launches per step forward and as many backward, each paying
the Python and driver launch cost (several microseconds), against a per-step floor of about
4.4 us at the original size in bf16 on an H200 (the weight reads at 4.8 TB/s). Captured once, the loop replays as one graph launch.

A graph bakes in the addresses it reads and writes, so each ``GraphedLSTMP`` owns static
copies of its inputs and the buffers its backward needs. The price is copying in xw (B x T x 4H,
the largest), the weights and the initial state, and copying out the outputs and gradients;
the saved buffers are not copied: an instance is leased from forward until the autograd node
that saved it is freed (the lease is a weak reference), and a forward finding every instance
of its key leased gets a new one, up to ``MAX_PER_KEY``.

The lease ends on the CPU side, when the node is freed, while the GPU may still be replaying or
copying out of the instance's buffers; so each use records a CUDA event after its last
operation, and the next user's stream waits on it before writing the static inputs (and an
evicted instance is synchronized before its buffers are freed).

Each instance holds the buffers of one eager forward and backward (``graph_bytes``: 419 MiB at
the original size with B=128, T=20 in bf16, 627 MiB in fp32), so the pool is bounded: at most
``pool_limit_bytes`` in all (a quarter of the device's memory, or ELMO_DIST_LSTMP_GRAPH_POOL_MB).
A new instance first evicts free ones, least recently used first; when it still does not fit,
or its key has MAX_PER_KEY leased, the layer runs eagerly (same results, more launches) and a
warning says so, once per key. ``release_cuda_graphs()`` drops them all.
"""
from __future__ import annotations

import itertools
import os
import warnings
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .lstmp_triton_launch import (
    StepConfig,
    Tiles,
    alloc_backward,
    alloc_forward,
    alloc_scratch,
    backward_steps,
    forward_steps,
    weight_grads,
)

MAX_PER_KEY = 4
POOL_ENV = "ELMO_DIST_LSTMP_GRAPH_POOL_MB"


class _Lease:
    """Held by the autograd context while an instance's saved buffers are in use."""


def _record_event():
    """A CUDA event recorded on the current stream (replaced in CPU tests)."""
    event = torch.cuda.Event()
    event.record()
    return event


def _wait_event(event) -> None:
    """The current stream waits for ``event`` (replaced in CPU tests)."""
    torch.cuda.current_stream().wait_event(event)


def graph_bytes(B: int, T: int, H: int, P: int, dtype: torch.dtype, has_mask: bool, tiles: Tiles) -> int:
    """Device bytes of one GraphedLSTMP's buffers (static inputs, forward and backward buffers,
    split-K scratch), known before it is made, so that room can be made first."""
    w = torch.finfo(dtype).bits // 8
    weight_dtype = B * T * 4 * H + P * 4 * H + H * P + B * T * P  # xw, w_rec, w_proj, grad_out
    weight_dtype += T * B * H + B * T * P  # fwd: ms, out
    weight_dtype += B * T * 4 * H + T * B * P  # bwd: dxw, dh_raw
    fp32 = T * B * 4 * H + (T + 1) * B * H + (T + 1) * B * P  # fwd: gates, cs, hs
    fp32 += B * P + B * H + max(tiles.fwd_split, tiles.bwd_split) * B * P  # bwd: dh, dc; scratch
    return w * weight_dtype + 4 * fp32 + (B * T if has_mask else 0)


def _capture(run) -> torch.cuda.CUDAGraph:
    """Warm up ``run`` (compiles the Triton kernels) on a side stream, then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: backward runs on autograd's device thread; other threads may keep working.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        run()
    return graph


class GraphedLSTMP:
    """Static buffers and the captured forward / backward loops for one shape and option set."""

    def __init__(self, B: int, T: int, H: int, P: int, dtype: torch.dtype, device: torch.device,
                 has_mask: bool, cfg: StepConfig):
        self.cfg = cfg
        self.xw = torch.zeros(B, T, 4 * H, dtype=dtype, device=device)
        self.w_rec = torch.zeros(P, 4 * H, dtype=dtype, device=device)
        self.w_proj = torch.zeros(H, P, dtype=dtype, device=device)
        self.keep = torch.ones(B, T, dtype=torch.uint8, device=device) if has_mask else None
        self.grad_out = torch.zeros(B, T, P, dtype=dtype, device=device)
        self.fwd = alloc_forward(B, T, H, P, dtype, device)
        self.bwd = alloc_backward(B, T, H, P, dtype, device)
        self.scratch = alloc_scratch(cfg.tiles, B, P, device)
        for buf in (*self.fwd, *self.bwd):
            buf.zero_()
        self._fwd_graph: Optional[torch.cuda.CUDAGraph] = None
        self._bwd_graph: Optional[torch.cuda.CUDAGraph] = None
        self._lease: Optional[weakref.ref] = None
        self._done = None  # CUDA event after the last operation of the latest use
        self.last_used = 0  # pool clock at the latest acquire (LRU eviction)
        tensors = [self.xw, self.w_rec, self.w_proj, self.keep, self.grad_out, *self.fwd, *self.bwd, self.scratch]
        self.nbytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def is_free(self) -> bool:
        """No autograd node holds it (the GPU may still be using it: see acquire)."""
        return self._lease is None or self._lease() is None

    def acquire(self) -> _Lease:
        """A lease for a new user; its stream first waits for the previous user's last work."""
        if self._done is not None:
            _wait_event(self._done)
        lease = _Lease()
        self._lease = weakref.ref(lease)
        return lease

    def drain(self) -> None:
        """Blocks until the GPU has finished with the buffers (before they are freed)."""
        if self._done is not None:
            self._done.synchronize()

    def _run_forward(self) -> None:
        forward_steps(self.xw, self.w_rec, self.w_proj, self.keep, self.fwd, self.scratch, self.cfg)

    def _run_backward(self) -> None:
        backward_steps(self.grad_out, self.w_rec, self.w_proj, self.keep, self.fwd, self.bwd, self.scratch,
                       self.cfg)

    def forward(self, xw: Tensor, w_rec: Tensor, w_proj: Tensor, h0: Tensor, c0: Tensor,
                keep: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Same results as lstmp_forward; returns copies of out, h_T, c_T."""
        if self._fwd_graph is None:
            self._fwd_graph = _capture(self._run_forward)
        self.xw.copy_(xw)
        self.w_rec.copy_(w_rec)
        self.w_proj.copy_(w_proj)
        if keep is not None:
            self.keep.copy_(keep)
        self.fwd.hs[0].copy_(h0)
        self.fwd.cs[0].copy_(c0)
        self._fwd_graph.replay()
        T = xw.shape[1]
        dtype = xw.dtype
        outs = (self.fwd.out.clone(), self.fwd.hs[T].to(dtype, copy=True), self.fwd.cs[T].to(dtype, copy=True))
        self._done = _record_event()
        return outs

    def backward(self, grad_out: Tensor, grad_h: Tensor, grad_c: Tensor, need_rec: bool,
                 need_proj: bool):
        """Same results as lstmp_backward, for the forward last run on this instance."""
        if self._bwd_graph is None:
            # The warm-up only reads the forward buffers; it writes the gradient buffers,
            # which are filled again below.
            self._bwd_graph = _capture(self._run_backward)
        self.grad_out.copy_(grad_out)
        self.bwd.dh.copy_(grad_h)
        self.bwd.dc.copy_(grad_c)
        self._bwd_graph.replay()
        dw_rec, dw_proj = weight_grads(self.fwd, self.bwd, self.cfg.reverse, need_rec, need_proj)
        dtype = grad_out.dtype
        grads = (self.bwd.dxw.clone(), dw_rec, dw_proj, self.bwd.dh.to(dtype, copy=True),
                 self.bwd.dc.to(dtype, copy=True))
        self._done = _record_event()
        return grads


_POOL: Dict[tuple, List[GraphedLSTMP]] = {}
_CLOCK = itertools.count(1)
_WARNED: set = set()


def pool_limit_bytes(device: torch.device) -> int:
    """ELMO_DIST_LSTMP_GRAPH_POOL_MB, else a quarter of the device's memory."""
    mb = os.environ.get(POOL_ENV)
    if mb is not None:
        return int(float(mb) * 2 ** 20)
    return torch.cuda.get_device_properties(device).total_memory // 4


def pool_bytes() -> int:
    return sum(r.nbytes for pool in _POOL.values() for r in pool)


def _drop(key: tuple, runner: GraphedLSTMP) -> None:
    runner.drain()
    _POOL[key].remove(runner)
    if not _POOL[key]:
        del _POOL[key]


def _make_room(nbytes: int, limit: int) -> bool:
    """Evicts free instances, least recently used first, until ``nbytes`` more fit in ``limit``."""
    free = sorted(((r.last_used, key, r) for key, pool in _POOL.items() for r in pool if r.is_free()),
                  key=lambda item: item[0])
    for _, key, runner in free:
        if pool_bytes() + nbytes <= limit:
            break
        _drop(key, runner)
    return pool_bytes() + nbytes <= limit


def _warn_once(key: tuple, why: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"elmo_dist_kernels: LSTMP CUDA graphs: {why}, so this layer runs eagerly (same "
                      f"results, more launches); warned once for key {key}", RuntimeWarning, stacklevel=4)


def acquire_graphed(key: tuple, nbytes: int, limit: int, make: Callable[[], GraphedLSTMP]
                    ) -> Tuple[Optional[GraphedLSTMP], Optional[_Lease]]:
    """A free instance for ``key`` (made with ``make()``, of ``nbytes``, if the pool has room
    under ``limit`` bytes after evicting free instances) and its lease; (None, None), with a
    warning once per key, when the caller must run eagerly."""
    pool = _POOL.get(key, [])
    runner = next((r for r in pool if r.is_free()), None)
    if runner is None:
        if len(pool) >= MAX_PER_KEY:
            _warn_once(key, f"all {MAX_PER_KEY} instances of this shape are in use (forwards in flight "
                            f"before their backwards)")
            return None, None
        if not _make_room(nbytes, limit):
            _warn_once(key, f"a new instance ({nbytes / 2 ** 20:.0f} MB) does not fit in the pool's "
                            f"{limit / 2 ** 20:.0f} MB ({POOL_ENV}) beside the instances in use")
            return None, None
        runner = make()
        _POOL.setdefault(key, []).append(runner)
    runner.last_used = next(_CLOCK)
    return runner, runner.acquire()


def release_cuda_graphs() -> None:
    """Drops every cached instance (graphs and buffers) once the GPU is done with it; leased
    ones live on until their autograd nodes are freed. For freeing memory, or between
    benchmark variants."""
    for pool in _POOL.values():
        for runner in pool:
            runner.drain()
    _POOL.clear()
