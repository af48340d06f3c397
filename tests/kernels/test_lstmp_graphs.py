"""CUDA-graph replay of the Triton LSTMP: results equal to the eager loop, and the instance
pool's leases, stream ordering, memory bound, eviction and eager fallback.

On a GPU the real graphs run (test_cuda_graphs_match_eager). Off CUDA the pool logic is tested
with the kernels under the interpreter: "capture" records the step loop and "replay" runs it,
and CUDA events are replaced by records in a log, so what is checked is which event each use
records, waits on and synchronizes, not CUDA's semantics.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from tests.kernels.test_lstmp_triton import (  # first: it sets up the interpreter off CUDA
    CELL_CLIP, DEVICE, ON_GPU, PROJ_CLIP, assert_matches, lt, make_inputs, run_both)

import elmo_dist_kernels.lstmp_triton_graphs as graphs  # noqa: E402
from tests.kernels.reference import lstmp_reference  # noqa: E402

NAMES = ("xw", "w_rec", "w_proj", "h0", "c0")


def _forward(tensors, mask, use_graphs, dtype=torch.float32):
    ins = [tensors[n].clone().requires_grad_() for n in NAMES]
    outs = lt.lstmp_sequence(*ins, mask=mask, cell_clip=CELL_CLIP, proj_clip=PROJ_CLIP, reverse=True,
                             use_cuda_graphs=use_graphs)
    return ins, outs


def _backward(ins, outs, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    torch.autograd.backward(outs, [torch.randn(o.shape, generator=gen).to(dtype).to(DEVICE) for o in outs])
    return [o.detach() for o in outs] + [t.grad for t in ins]


def check_graphs_match_eager(dtype):
    """Graph replay gives bit-identical results to the eager loop: on the first call (capture;
    the backward graph is captured inside autograd's backward), on a second call with new
    inputs (replay), and with two forwards in flight before their backwards (two instances of
    one key). Returns the number of instances made."""
    lt.release_cuda_graphs()
    batches = [make_inputs(6, 5, 40, 24, dtype, True, seed=s) for s in (11, 12, 13)]
    eager = [_backward(*_forward(t, m, False, dtype), seed=i, dtype=dtype) for i, (t, m) in enumerate(batches)]
    graphed = [_backward(*_forward(*batches[0], True, dtype), seed=0, dtype=dtype)]
    pending = [_forward(t, m, True, dtype) for t, m in batches[1:]]
    graphed += [_backward(*p, seed=i + 1, dtype=dtype) for i, p in enumerate(pending)]
    for i, (want, got) in enumerate(zip(eager, graphed)):
        for k, (a, b) in enumerate(zip(got, want)):
            assert torch.equal(a, b), f"call {i}, tensor {k}: graph replay differs from eager"
    made = sum(len(pool) for pool in graphs._POOL.values())
    lt.release_cuda_graphs()
    return made


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graphs_match_eager(dtype):
    assert check_graphs_match_eager(dtype) == 2


class _Events:
    """Stand-in for CUDA events: ``log`` holds ("record", n), ("wait", n), ("sync", n)."""

    def __init__(self):
        self.log, self.count = [], 0

    def record(self):
        self.count += 1
        event = SimpleNamespace(n=self.count, synchronize=lambda n=self.count: self.log.append(("sync", n)))
        self.log.append(("record", event.n))
        return event

    def wait(self, event):
        self.log.append(("wait", event.n))


@pytest.fixture
def fake_cuda(monkeypatch):
    """Graphs on CPU: capture = the loop itself, logged events, a pool limit from the env."""
    if ON_GPU:
        pytest.skip("test_cuda_graphs_match_eager runs the real graphs")
    events = _Events()
    monkeypatch.setattr(graphs, "_capture", lambda run: SimpleNamespace(replay=run))
    monkeypatch.setattr(graphs, "_record_event", events.record)
    monkeypatch.setattr(graphs, "_wait_event", events.wait)
    monkeypatch.setattr(lt, "_graphs_wanted", lambda use_cuda_graphs, device: bool(use_cuda_graphs))
    monkeypatch.setenv(graphs.POOL_ENV, "1024")
    monkeypatch.setattr(graphs, "_WARNED", set())
    lt.release_cuda_graphs()
    yield events
    lt.release_cuda_graphs()


def test_graph_runner_buffers_and_leases(fake_cuda):
    """The static buffers and the leases: the second forward in flight gets its own instance
    (2 made), the first call's instance is reused."""
    assert check_graphs_match_eager(torch.float32) == 2


def _bytes(B, T, H, P, has_mask=True):
    cfg = lt.step_config(B, H, P, torch.float32, DEVICE, CELL_CLIP, PROJ_CLIP, True)
    return graphs.graph_bytes(B, T, H, P, torch.float32, has_mask, cfg.tiles)


def test_graph_bytes_are_the_instance_buffers(fake_cuda):
    for has_mask in (False, True):
        cfg = lt.step_config(5, 12, 7, torch.float32, DEVICE, None, None, False)
        runner = graphs.GraphedLSTMP(5, 3, 12, 7, torch.float32, DEVICE, has_mask, cfg)
        assert runner.nbytes == graphs.graph_bytes(5, 3, 12, 7, torch.float32, has_mask, cfg.tiles)


def test_reuse_waits_for_the_last_use(fake_cuda):
    """The lease ends on the CPU side; the next user's stream waits on the event recorded
    after the previous use's last operation (its backward; or its forward under no_grad)."""
    tensors, mask = make_inputs(3, 4, 5, 3, torch.float32, True, seed=1)
    _backward(*_forward(tensors, mask, True), seed=0)
    assert fake_cuda.log == [("record", 1), ("record", 2)]  # after forward, after backward
    with torch.no_grad():
        _forward(tensors, mask, True)  # reuses the instance: waits on the backward's event
        _forward(tensors, mask, True)  # the lease died at once: waits on that forward's event
    assert fake_cuda.log[2:] == [("wait", 2), ("record", 3), ("wait", 3), ("record", 4)]
    assert sum(len(p) for p in graphs._POOL.values()) == 1


def _check_against_reference(tensors, mask, seed):
    got, want = run_both(tensors, mask, CELL_CLIP, PROJ_CLIP, True, torch.float32, seed, use_cuda_graphs=True)
    for name in want:
        assert_matches(name, got[name], want[name], torch.float32)


def test_pool_is_bounded_and_evicts_least_recently_used(fake_cuda, monkeypatch):
    """With room for two instances, varying T: a third shape evicts the least recently used
    free instance (synchronized first), the pool never exceeds its limit, results stay right."""
    B, H, P = 3, 5, 3
    limit = _bytes(B, 4, H, P) + _bytes(B, 5, H, P) + _bytes(B, 6, H, P) // 2
    monkeypatch.setenv(graphs.POOL_ENV, str(limit / 2 ** 20))
    seen = []
    for i, T in enumerate((4, 5, 4, 6, 5)):
        tensors, mask = make_inputs(B, T, H, P, torch.float32, True, seed=20 + i)
        _check_against_reference(tensors, mask, seed=20 + i)
        assert graphs.pool_bytes() <= limit
        seen.append(sorted(key[2] for key in graphs._POOL))
    # T=6 needs room: T=5 was used least recently (T=4 was reused at step 3), so it goes; then
    # T=5 again evicts T=4, the least recently used of the free T=4 and T=6.
    assert seen == [[4], [4, 5], [4, 5], [4, 6], [5, 6]]
    assert sum(1 for kind, _ in fake_cuda.log if kind == "sync") == 2


def test_eager_fallback_warns_once_per_key(fake_cuda, monkeypatch):
    """Leased instances are never evicted: with room for one instance, a second forward in flight
    runs eagerly with one warning, a third in flight runs eagerly without another; past
    MAX_PER_KEY the same holds. The eager results match the reference."""
    B, T, H, P = 3, 4, 5, 3
    monkeypatch.setenv(graphs.POOL_ENV, str(_bytes(B, T, H, P) * 1.5 / 2 ** 20))
    batches = [make_inputs(B, T, H, P, torch.float32, True, seed=s) for s in (30, 31, 32)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pending = [_forward(t, m, True) for t, m in batches]
    assert len(caught) == 1 and "does not fit in the pool" in str(caught[0].message)
    assert caught[0].category is RuntimeWarning
    assert sum(len(p) for p in graphs._POOL.values()) == 1
    for (ins, outs), (tensors, mask) in zip(pending, batches):
        want = lstmp_reference(*(tensors[n].double() for n in NAMES), mask=mask, cell_clip=CELL_CLIP,
                               proj_clip=PROJ_CLIP, reverse=True)
        for got, ref in zip(outs, want):
            assert_matches("out", got, ref, torch.float32)
    del pending
    monkeypatch.setenv(graphs.POOL_ENV, "1024")
    monkeypatch.setattr(graphs, "MAX_PER_KEY", 1)
    monkeypatch.setattr(graphs, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="all 1 instances of this shape are in use"):
        pending = [_forward(t, m, True) for t, m in batches[:2]]  # both in flight
    assert len(pending) == 2 and sum(len(p) for p in graphs._POOL.values()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="real CUDA graphs and events need a CUDA device")
def test_pool_bound_and_eviction_on_cuda(monkeypatch):
    """The same sequence as the CPU eviction test with real graphs and events: graph results
    stay bit-identical to eager across evictions, and the pool stays under its limit."""
    B, H, P = 6, 40, 24
    limit = _bytes(B, 4, H, P) + _bytes(B, 5, H, P) + _bytes(B, 6, H, P) // 2
    monkeypatch.setenv(graphs.POOL_ENV, str(limit / 2 ** 20))
    lt.release_cuda_graphs()
    for i, T in enumerate((4, 5, 4, 6, 5)):
        tensors, mask = make_inputs(B, T, H, P, torch.float32, True, seed=40 + i)
        eager = _backward(*_forward(tensors, mask, False), seed=i)
        graphed = _backward(*_forward(tensors, mask, True), seed=i)
        assert all(torch.equal(a, b) for a, b in zip(eager, graphed)), f"T={T}: graph replay differs from eager"
        assert graphs.pool_bytes() <= limit
    assert sorted(key[2] for key in graphs._POOL) == [5, 6]
    lt.release_cuda_graphs()
