"""LSTMP layer, forward + backward, on CPU: the torch path (with clipping) against
``nn.LSTM(proj_size=...)`` (the baseline a user would pick; it cannot clip) and the per-step
autograd loop (how AllenNLP runs ELMo's LSTM). Sizes: ELMo small and medium, bilm-tf window T=20.

    python -m pytest benchmarks/bench_lstm_layer.py --benchmark-only
"""
import pytest
import torch

from benchmarks.conftest import median_s

from elmo_dist.model.lstm import _reference_impl
from elmo_dist_kernels.lstmp_torch import lstmp_sequence

SIZES = {"small": (1024, 128), "medium": (2048, 256)}
B, T = 32, 20


def _weights(H, P, D):
    g = torch.Generator().manual_seed(0)
    w_in = (torch.randn(D, 4 * H, generator=g) * 0.05).requires_grad_()
    bias = torch.zeros(4 * H, requires_grad=True)
    w_rec = (torch.randn(P, 4 * H, generator=g) * 0.05).requires_grad_()
    w_proj = (torch.randn(H, P, generator=g) * 0.05).requires_grad_()
    return w_in, bias, w_rec, w_proj


def _ours(impl, H, P):
    D = P
    x = torch.randn(B, T, D, requires_grad=True)
    w_in, bias, w_rec, w_proj = _weights(H, P, D)
    h0, c0 = torch.zeros(B, P), torch.zeros(B, H)

    def step():
        xw = torch.addmm(bias, x.reshape(-1, D), w_in).view(B, T, 4 * H)  # (B, T, 4H)
        out, _, _ = impl(xw, w_rec, w_proj, h0, c0, None, 3.0, 3.0, False)
        out.sum().backward()
    return step


def _record(benchmark):
    median = median_s(benchmark)
    if median is not None:
        benchmark.extra_info["tokens_per_s"] = B * T / median


@pytest.mark.parametrize("size", SIZES)
def test_nn_lstm_proj(benchmark, size):
    H, P = SIZES[size]
    lstm = torch.nn.LSTM(P, H, proj_size=P, batch_first=True)
    x = torch.randn(B, T, P, requires_grad=True)

    def step():
        out, _ = lstm(x)
        out.sum().backward()
    benchmark.group = f"lstm-{size}"
    benchmark.extra_info.update(baseline=True, clip=False)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    _record(benchmark)


@pytest.mark.parametrize("size", SIZES)
def test_torch_fused_backward(benchmark, size):
    benchmark.group = f"lstm-{size}"
    benchmark.extra_info.update(clip=True)
    benchmark.pedantic(_ours(lstmp_sequence, *SIZES[size]), rounds=5, warmup_rounds=1)
    _record(benchmark)


@pytest.mark.parametrize("size", SIZES)
def test_per_step_autograd_loop(benchmark, size):
    benchmark.group = f"lstm-{size}"
    benchmark.extra_info.update(clip=True)
    benchmark.pedantic(_ours(_reference_impl, *SIZES[size]), rounds=5, warmup_rounds=1)
    _record(benchmark)
