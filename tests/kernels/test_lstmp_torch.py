"""The torch LSTMP (hand-written backward) against the plain-autograd float64 reference."""
import itertools

import pytest
import torch

from elmo_dist_kernels.lstmp_torch import lstmp_sequence
from tests.kernels.reference import lstmp_reference

TOLERANCE = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 1e-4)}


def _inputs(B, T, H, P, dtype, masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(B, T, 4 * H, generator=g, dtype=torch.float64)
    w_rec = torch.randn(P, 4 * H, generator=g, dtype=torch.float64) * 0.5
    w_proj = torch.randn(H, P, generator=g, dtype=torch.float64) * 0.5
    h0 = torch.randn(B, P, generator=g, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        lengths = torch.tensor([T, max(T - 2, 1), 1, 0, T][:B])
        mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    tensors = [t.to(dtype).requires_grad_() for t in (xw, w_rec, w_proj, h0, c0)]
    return tensors, mask


def _describe(name, got, want, atol, rtol):
    bad = ~torch.isclose(got.double(), want.double(), atol=atol, rtol=rtol)
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        return (f"{name}: {int(bad.sum())}/{bad.numel()} differ, first at {idx}: {got[tuple(idx)].item()} vs "
                f"{want[tuple(idx)].item()}; nan={bool(torch.isnan(got).any())} inf={bool(torch.isinf(got).any())}")
    return None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(3, 4, 5, 3), (5, 6, 12, 7)])
@pytest.mark.parametrize("masked,reverse,clip", list(itertools.product([False, True], [False, True], [None, 0.4])))
def test_matches_reference(dtype, shape, masked, reverse, clip):
    B, T, H, P = shape
    (xw, w_rec, w_proj, h0, c0), mask = _inputs(B, T, H, P, dtype, masked)
    args = dict(mask=mask, cell_clip=clip, proj_clip=clip, reverse=reverse)
    got = lstmp_sequence(xw, w_rec, w_proj, h0, c0, **args)
    ref_inputs = [t.detach().double().requires_grad_() for t in (xw, w_rec, w_proj, h0, c0)]
    want = lstmp_reference(*ref_inputs, **args)
    if clip is not None:  # the clip must really be active in this case
        assert (want[0].abs() >= clip - 1e-12).any()
    g = torch.Generator().manual_seed(1)
    grads_out = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in want]
    got_grads = torch.autograd.grad(got, (xw, w_rec, w_proj, h0, c0), [o.to(dtype) for o in grads_out])
    want_grads = torch.autograd.grad(want, ref_inputs, grads_out)
    atol, rtol = TOLERANCE[dtype]
    names = ["out", "h_T", "c_T"] + ["d_xw", "d_w_rec", "d_w_proj", "d_h0", "d_c0"]
    problems = [_describe(n, a, b, atol, rtol) for n, a, b in zip(names, list(got) + list(got_grads),
                                                                  list(want) + list(want_grads))]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


def test_clipping_holds():
    (xw, w_rec, w_proj, h0, c0), _ = _inputs(4, 8, 6, 5, torch.float32, False)
    with torch.no_grad():
        out, h, c = lstmp_sequence(xw * 20, w_rec * 20, w_proj * 20, h0, c0, None, 0.5, 0.25, False)
    assert out.abs().max() <= 0.25 and h.abs().max() <= 0.25 and c.abs().max() <= 0.5
    assert out.abs().max() == pytest.approx(0.25)  # and it did bind


def test_padding_leaves_state_unchanged():
    (xw, w_rec, w_proj, h0, c0), _ = _inputs(2, 5, 4, 3, torch.float64, False)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        out, h, c = lstmp_sequence(xw, w_rec, w_proj, h0, c0, mask)
        short, h2, c2 = lstmp_sequence(xw[1:, :2], w_rec, w_proj, h0[1:], c0[1:])
    assert torch.equal(out[1, 2:], torch.zeros_like(out[1, 2:]))
    torch.testing.assert_close(h[1], h2[0])
    torch.testing.assert_close(c[1], c2[0])
    torch.testing.assert_close(out[1, :2], short[0])


def test_bad_shapes_are_named():
    (xw, w_rec, w_proj, h0, c0), _ = _inputs(2, 3, 4, 3, torch.float32, False)
    with pytest.raises(ValueError, match="w_proj"):
        lstmp_sequence(xw, w_rec, w_proj[:3], h0, c0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("masked,clip", [(False, None), (True, 0.4)])
def test_two_directions_stepped_together_match_reference(dtype, masked, clip):
    """lstmp_steps with D = 2 (a forward and a time-reversed direction, as the biLM runs them)
    against two separate float64 reference runs, outputs and every gradient."""
    from elmo_dist_kernels.lstmp_torch import lstmp_steps
    B, T, H, P = 5, 6, 12, 7
    dirs = [_inputs(B, T, H, P, dtype, masked, seed=s) for s in (0, 1)]
    mask = dirs[0][1]
    (xf, rf, pf, hf, cf), (xb, rb, pb, hb, cb) = dirs[0][0], dirs[1][0]
    steps = torch.stack([xf.transpose(0, 1), xb.flip(1).transpose(0, 1)], dim=1)  # (T, 2, B, 4H)
    mask_steps = None if mask is None else torch.stack([mask.t(), mask.flip(1).t()], dim=1)
    out, h, c = lstmp_steps(steps, torch.stack([rf, rb]), torch.stack([pf, pb]), torch.stack([hf, hb]),
                            torch.stack([cf, cb]), mask_steps, clip, clip)
    got = [out[:, 0].transpose(0, 1), out[:, 1].flip(0).transpose(0, 1), h, c]  # by position
    refs = []
    for (tensors, _), reverse in zip(dirs, (False, True)):
        ref_inputs = [t.detach().double().requires_grad_() for t in tensors]
        refs.append((ref_inputs, lstmp_reference(*ref_inputs, mask=mask, cell_clip=clip, proj_clip=clip,
                                                 reverse=reverse)))
    (in_f, (of, hf_, cf_)), (in_b, (ob, hb_, cb_)) = refs
    want = [of, ob, torch.stack([hf_, hb_]), torch.stack([cf_, cb_])]
    g = torch.Generator().manual_seed(2)
    grads_out = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in want]
    leaves = [xf, rf, pf, hf, cf, xb, rb, pb, hb, cb]
    got_grads = torch.autograd.grad(got, leaves, [o.to(dtype) for o in grads_out])
    want_grads = torch.autograd.grad(want, in_f + in_b, grads_out)
    atol, rtol = TOLERANCE[dtype]
    names = ["out_f", "out_b", "h_T", "c_T"] + [f"d_{n}_{d}" for d in "fb" for n in ("xw", "w_rec", "w_proj", "h0", "c0")]
    problems = [_describe(n, a, b, atol, rtol) for n, a, b in zip(names, got + list(got_grads), want + list(want_grads))]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
