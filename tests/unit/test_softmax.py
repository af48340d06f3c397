"""The fused adaptive softmax against an independent float64 reference, in fp32, float64 and
under bf16 autocast (CPU; CUDA too where there is one), and against
``torch.nn.AdaptiveLogSoftmaxWithLoss`` on the same weights.

The reference builds every log-probability from the parameters with plain matmuls and
log_softmax (no gather tricks, no row grouping) and takes its gradients with autograd in float64.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elmo_dist.model import BiLM, ModelConfig
from elmo_dist.model.softmax import AdaptiveSoftmax, FullSoftmax, linear_nll

# Per case: |got - reference| <= atol * max|reference| + rtol * |reference|, elementwise.
# bf16 autocast: inputs and weights rounded to bf16 (2^-8 relative) before each matmul, and the
# stored softmax-minus-one-hot is bf16 too; errors of a few bf16 ulps of the largest value.
TOLERANCES = {
    "float64": dict(atol=1e-12, rtol=1e-10),
    "float32": dict(atol=2e-6, rtol=2e-5),
    "bf16-autocast": dict(atol=2.5e-2, rtol=2.5e-2),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (N, P, V, cutoffs, div): none a power of two; the last one has more clusters than rows reach.
SHAPES = [(37, 23, 101, [10, 50], 2.0), (5, 13, 61, [7, 20, 40], 1.5), (64, 30, 257, [3, 100, 200], 4.0)]


def assert_matches(name: str, got: torch.Tensor, want: torch.Tensor, case: str) -> None:
    """Elementwise check against the table; the message says how many, where, and NaN/inf."""
    tol = TOLERANCES[case]
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = want.abs().max().item() if want.numel() else 1.0
    diff = (got - want).abs()
    bad = ~(diff <= tol["atol"] * (scale or 1.0) + tol["rtol"] * want.abs())  # NaN counts as bad
    if bad.any():
        finite = diff[~diff.isnan()]
        raise AssertionError(
            f"{name} ({case}): {int(bad.sum())} of {bad.numel()} elements differ; first at "
            f"{bad.nonzero()[:5].tolist()}; max |diff| {finite.max().item() if finite.numel() else float('nan'):.3e} "
            f"(scale {scale:.3e}, atol {tol['atol']}, rtol {tol['rtol']}); got NaN {int(got.isnan().sum())} "
            f"inf {int(got.isinf().sum())}, reference NaN {int(want.isnan().sum())} inf {int(want.isinf().sum())}")


def reference_log_probs(params: dict[str, torch.Tensor], hidden: torch.Tensor, cutoffs: list[int]) -> torch.Tensor:
    """(N, V) log p(w) = log p_head(w) for head words, log p_head(cluster) + log p_k(w) otherwise."""
    head = F.log_softmax(hidden @ params["head.weight"].T + params["head.bias"], dim=1)
    shortlist = cutoffs[0]
    parts = [head[:, :shortlist]]
    for k in range(len(cutoffs) - 1):
        proj = hidden @ params[f"tails.{k}.0.weight"].T
        logits = proj @ params[f"tails.{k}.1.weight"].T + params[f"tails.{k}.1.bias"]
        parts.append(head[:, shortlist + k:shortlist + k + 1] + F.log_softmax(logits, dim=1))
    return torch.cat(parts, dim=1)


def zipf_targets(n: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Ids drawn as from a frequency-sorted vocabulary (rank r with probability ~ r^-0.8)."""
    p = torch.arange(1, vocab + 1, dtype=torch.float64) ** -0.8
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)


def make_case(N, P, V, cutoffs, div, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sm = AdaptiveSoftmax(P, V, cutoffs, div)
    with torch.no_grad():
        for p in sm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    hidden = torch.randn(N, P, generator=gen)
    targets = zipf_targets(N, V, gen)
    edges = torch.tensor([0, cutoffs[0] - 1, *cutoffs, *[c - 1 for c in cutoffs[1:]], V - 1])  # every cluster edge
    targets[:min(N, len(edges))] = edges[:min(N, len(edges))]
    return sm, hidden, targets


def reference_nll_and_grads(sm, hidden, targets):
    params = {k: v.detach().double().requires_grad_() for k, v in sm.named_parameters()}
    h = hidden.detach().double().requires_grad_()
    logp = reference_log_probs(params, h, sm.cutoffs)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    weights = torch.linspace(0.5, 1.5, len(targets), dtype=torch.float64)  # a non-uniform upstream gradient
    (nll * weights).sum().backward()
    return nll.detach(), h.grad, {k: p.grad for k, p in params.items()}, weights


def run_ours(sm, hidden, targets, weights, case, device):
    sm = sm.to(device)
    h = hidden.to(device)
    if case == "float64":
        sm, h = sm.double(), h.double()
    h = h.detach().requires_grad_()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=case == "bf16-autocast"):
        nll = sm.nll(h, targets.to(device))
    (nll * weights.to(device, nll.dtype)).sum().backward()
    return nll, h.grad, {k: p.grad for k, p in sm.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(TOLERANCES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-P{}-V{}-c{}".format(*s[:3], "_".join(map(str, s[3]))))
def test_nll_and_every_gradient_match_float64_reference(shape, case, device):
    sm, hidden, targets = make_case(*shape)
    want_nll, want_dh, want_dp, weights = reference_nll_and_grads(sm, hidden, targets)
    nll, dh, dp = run_ours(sm, hidden, targets, weights, case, device)
    assert nll.dtype == (torch.float64 if case == "float64" else torch.float32)
    assert_matches("nll", nll, want_nll, case)
    assert_matches("d hidden", dh, want_dh, case)
    assert set(dp) == set(want_dp)
    for name, grad in dp.items():
        param = dict(sm.named_parameters())[name]
        assert grad is not None and grad.dtype == param.dtype, f"{name}: gradient {grad} for a {param.dtype} parameter"
        assert_matches(f"d {name}", grad, want_dp[name], case)


def test_torch_adaptive_log_softmax_agrees_on_the_same_weights():
    """With the tail biases at zero (torch's tails have none) both compute the same model."""
    N, P, V, cutoffs, div = 50, 24, 300, [20, 120], 2.0
    sm, hidden, targets = make_case(N, P, V, cutoffs, div, seed=3)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(P, V, cutoffs, div_value=div, head_bias=True)
    with torch.no_grad():
        ref.head.weight.copy_(sm.head.weight)
        ref.head.bias.copy_(sm.head.bias)
        for k, tail in enumerate(sm.tails):
            tail[1].bias.zero_()
            ref.tail[k][0].weight.copy_(tail[0].weight)
            ref.tail[k][1].weight.copy_(tail[1].weight)
    sm, ref, hidden = sm.double(), ref.double(), hidden.double()
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    ours = sm.nll(h1, targets)
    theirs = ref(h2, targets)
    assert_matches("nll vs torch", ours, -theirs.output, "float64")
    ours.mean().backward()
    theirs.loss.backward()
    assert_matches("d hidden vs torch", h1.grad, h2.grad, "float64")
    assert_matches("d head.weight vs torch", sm.head.weight.grad, ref.head.weight.grad, "float64")
    for k, tail in enumerate(sm.tails):
        assert_matches(f"d tail {k} proj vs torch", tail[0].weight.grad, ref.tail[k][0].weight.grad, "float64")
        assert_matches(f"d tail {k} out vs torch", tail[1].weight.grad, ref.tail[k][1].weight.grad, "float64")


def test_torch_adaptive_log_softmax_fails_under_bf16_autocast_and_ours_does_not():
    """The claim the benchmark records: torch's module cannot run under autocast, ours can."""
    N, P, V = 16, 12, 80
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(P, V, [10, 40], div_value=2.0)
    sm = AdaptiveSoftmax(P, V, [10, 40], 2.0)
    hidden, targets = torch.randn(N, P), torch.arange(N) * 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="dtype"):
            ref(hidden, targets)
        nll = sm.nll(hidden, targets)
    assert nll.dtype == torch.float32 and torch.isfinite(nll).all()


def test_underflowing_target_probability_is_recomputed_exactly():
    """A target with p < 1e-30 in fp32: -log(p) from the softmax would be inf or coarse."""
    sm, hidden, targets = make_case(12, 10, 40, [8, 20], 2.0, seed=5)
    with torch.no_grad():
        sm.head.bias[0] = 150.0  # word 0 takes all the head's mass: the others get p ~ e^-150
    targets[:] = 3
    targets[0] = 0
    want, *_ = reference_nll_and_grads(sm, hidden, targets)
    got = sm.nll(hidden.clone().requires_grad_(), targets)
    assert want[1:].min() > 100  # the case really underflows fp32 probabilities
    assert_matches("nll with underflow", got, want, "float32")


def test_no_grad_path_equals_grad_path_and_log_probs():
    sm, hidden, targets = make_case(*SHAPES[0])
    with torch.no_grad():
        eval_nll = sm.nll(hidden, targets)
        logp = sm.log_probs(hidden)
    train_nll = sm.nll(hidden.clone().requires_grad_(), targets)
    torch.testing.assert_close(eval_nll, train_nll.detach())
    torch.testing.assert_close(eval_nll, -logp.gather(1, targets[:, None]).squeeze(1))


@pytest.mark.parametrize("case", ["float32", "bf16-autocast"])
def test_evaluation_path_matches_reference(case):
    """Without gradients the op takes its own path (log_softmax in place, no saved buffer)."""
    sm, hidden, targets = make_case(*SHAPES[2])
    want, *_ = reference_nll_and_grads(sm, hidden, targets)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16-autocast"):
        got = sm.nll(hidden, targets)
    assert got.dtype == torch.float32
    assert_matches("eval nll", got, want, case)


def test_log_probs_under_bf16_autocast_are_fp32_and_normalised():
    sm, hidden, _ = make_case(*SHAPES[0])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logp = sm.log_probs(hidden)
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(len(hidden)), atol=1e-4, rtol=0)


def test_empty_batch_and_all_rows_in_the_head():
    sm = AdaptiveSoftmax(8, 40, [10, 20], 2.0)
    empty = sm.nll(torch.zeros(0, 8, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,)
    empty.sum().backward()
    h = torch.randn(6, 8, requires_grad=True)
    sm.nll(h, torch.arange(6)).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in sm.tails.parameters())  # no tail ran


def test_backward_twice_with_retain_graph():
    """The saved buffer is read-only in the backward, so a retained graph gives the same grads."""
    sm, hidden, targets = make_case(*SHAPES[0])
    h = hidden.clone().requires_grad_()
    loss = sm.nll(h, targets).sum()
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    h.grad = None
    loss.backward()
    torch.testing.assert_close(h.grad, first)


def test_linear_nll_without_bias_and_a_frozen_input():
    """needs_input_grad: no bias, and x that needs no gradient (only the weight learns)."""
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(9, 7, generator=gen, dtype=torch.float64), torch.randn(11, 7, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 11, (9,), generator=gen)
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    got = linear_nll(x, w1, None, t)
    want = F.cross_entropy(x @ w2.T, t, reduction="none")
    assert_matches("nll no bias", got, want, "float64")
    got.sum().backward()
    want.sum().backward()
    assert_matches("d weight no bias", w1.grad, w2.grad, "float64")


def test_training_steps_follow_the_reference():
    """Thirty SGD steps with the fused softmax and with the float64 reference, losses step by step."""
    N, P, V, cutoffs, div = 48, 16, 150, [12, 60], 2.0
    sm, hidden, targets = make_case(N, P, V, cutoffs, div, seed=7)
    params = {k: v.detach().double().clone().requires_grad_() for k, v in sm.named_parameters()}
    sm = sm.double()
    h = hidden.double()
    opt_ours = torch.optim.SGD(sm.parameters(), lr=0.5)
    opt_ref = torch.optim.SGD(params.values(), lr=0.5)
    losses = []
    for step in range(30):
        ours = sm.nll(h, targets).mean()
        ref = -reference_log_probs(params, h, sm.cutoffs)[torch.arange(N), targets].mean()
        losses.append(ours.item())
        assert abs(ours.item() - ref.item()) < 1e-9 * max(1.0, abs(ref.item())), f"step {step}: {ours.item()} vs {ref.item()}"
        for opt, loss in ((opt_ours, ours), (opt_ref, ref)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert losses[-1] < 0.5 * losses[0]  # and it does learn


def test_bilm_adaptive_lm_loss_under_bf16_autocast_keeps_fp32_gradients():
    cfg = ModelConfig(lstm_dim=12, projection_dim=8, n_layers=1, char_embed_dim=4, filters=[[1, 4], [2, 4]],
                      n_highway=1, vocab_size=40, dropout=0.0, softmax="adaptive", adaptive_cutoffs=[6, 20])
    torch.manual_seed(0)
    model = BiLM(cfg)
    chars = torch.randint(1, 262, (2, 5, 50))
    fwd_t = torch.randint(0, 40, (2, 5))
    bwd_t = torch.randint(0, 40, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = model.lm_loss(chars, fwd_t, bwd_t)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.softmax.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_full_softmax_unchanged_contract():
    sm = FullSoftmax(5, 11).double()
    h = torch.randn(4, 5, dtype=torch.float64)
    t = torch.tensor([0, 3, 10, 7])
    torch.testing.assert_close(sm.nll(h, t), -sm.log_probs(h).gather(1, t[:, None]).squeeze(1))
