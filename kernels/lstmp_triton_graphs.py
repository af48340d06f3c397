"""CUDA-graph replay of the Triton LSTMP step loops (CUDA only).

Eagerly, a layer costs 2-3 kernel launches per step forward and as many backward, each paying
the Python and driver launch cost (several microseconds), against a per-step floor of about
6 us at the original size. Captured once, the loop replays as one graph launch.

A graph bakes in the addresses it reads and writes, so each ``GraphedLSTMP`` owns static
copies of its inputs and the buffers its backward needs. The price is copying in xw (B x T x 4H,
the largest), the weights and the initial state, and copying out the outputs and gradients;
the saved buffers are not copied: an instance is leased from forward until the autograd node
that saved it is freed (the lease is a weak reference), and a forward finding every instance
of its key leased gets a new one, up to ``MAX_PER_KEY``, beyond which the caller runs eagerly.
Each instance keeps its buffers (those of one eager forward and backward) until
``release_cuda_graphs()``.
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .lstmp_triton_launch import (
    StepConfig,
    alloc_backward,
    alloc_forward,
    alloc_scratch,
    backward_steps,
    forward_steps,
    weight_grads,
)

MAX_PER_KEY = 4


class _Lease:
    """Held by the autograd context while an instance's saved buffers are in use."""


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

    def is_free(self) -> bool:
        return self._lease is None or self._lease() is None

    def acquire(self) -> _Lease:
        lease = _Lease()
        self._lease = weakref.ref(lease)
        return lease

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
        return (self.fwd.out.clone(), self.fwd.hs[T].to(dtype, copy=True),
                self.fwd.cs[T].to(dtype, copy=True))

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
        return (self.bwd.dxw.clone(), dw_rec, dw_proj, self.bwd.dh.to(dtype, copy=True),
                self.bwd.dc.to(dtype, copy=True))


_POOL: Dict[tuple, List[GraphedLSTMP]] = {}


def acquire_graphed(key: tuple, make) -> Tuple[Optional[GraphedLSTMP], Optional[_Lease]]:
    """A free instance for ``key`` (made with ``make()`` if the pool has room) and its lease,
    or (None, None) when all MAX_PER_KEY instances are leased."""
    pool = _POOL.setdefault(key, [])
    runner = next((r for r in pool if r.is_free()), None)
    if runner is None:
        if len(pool) >= MAX_PER_KEY:
            return None, None
        runner = make()
        pool.append(runner)
    return runner, runner.acquire()


def release_cuda_graphs() -> None:
    """Drops every cached instance (graphs and buffers); leased ones live on until their
    autograd nodes are freed. For freeing memory, or between benchmark variants."""
    _POOL.clear()
