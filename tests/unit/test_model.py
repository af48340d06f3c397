"""The biLM: published sizes, clipping, layer structure, softmaxes, config validation."""
import pytest
import torch

from elmo_dist.model import BiLM, BiLMState, LSTMState, ModelConfig, preset
from elmo_dist.model.softmax import AdaptiveSoftmax, FullSoftmax
from tests.kernels.reference import lstmp_reference


@pytest.mark.parametrize("name,millions", [("small", 13.6), ("medium", 28.0), ("original", 93.6)])
def test_parameter_counts_match_published(name, millions):
    # Peters et al. 2018 / bilm-tf sizes, parameters without the softmax.
    model = BiLM(preset(name))
    assert round(model.num_parameters() / 1e6, 1) == millions


def micro_config(**kw):
    base = dict(lstm_dim=12, projection_dim=6, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 6], [3, 5]],
                n_highway=1, vocab_size=30, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def random_chars(B, T, lengths=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 262, (B, T, 50), generator=g)
    if lengths is not None:
        for b, n in enumerate(lengths):
            ids[b, n:] = 0
    return ids


def test_lstm_layer_matches_reference_with_tf_gate_order():
    torch.manual_seed(0)
    cfg = micro_config(cell_clip=0.5, proj_clip=0.3)
    model = BiLM(cfg).double()
    layer = model.forward_lm.layers[0]
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    h0, c0 = torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 12, dtype=torch.float64)
    got, _, _ = layer(x, h0, c0, None, False)
    # Independent construction from the bilm-tf layout: W_0 = [W_in; W_rec] columns (i, j, f, o),
    # forget bias +1 at run time.
    H = 12
    W0 = torch.cat([layer.input_weight, layer.recurrent_weight]).detach()
    i, j, f, o = W0.split(H, dim=1)
    bi, bj, bf, bo = layer.bias.detach().split(H)
    w_in, w_rec = torch.cat([i, f, o, j], 1)[:6], torch.cat([i, f, o, j], 1)[6:]
    xw = x @ w_in + torch.cat([bi, bf + 1, bo, bj])
    want, _, _ = lstmp_reference(xw, w_rec, layer.proj_weight.detach(), h0, c0, None, 0.5, 0.3, False)
    torch.testing.assert_close(got, want)


def test_clipping_holds_in_the_model():
    cfg = micro_config(cell_clip=0.2, proj_clip=0.1)
    model = BiLM(cfg)
    with torch.no_grad():
        for p in model.forward_lm.parameters():
            p.mul_(50)
    out = model(random_chars(2, 7))
    fwd_top = out.layers[:, 1, :, :6]  # first LSTM layer, forward half (no residual there)
    assert fwd_top.abs().max() <= 0.1 + 1e-6
    assert fwd_top.abs().max() >= 0.1 - 1e-6


def test_layers_shape_mask_and_layer0_duplicated():
    model = BiLM(micro_config())
    out = model(random_chars(3, 6, lengths=[6, 4, 1]))
    assert out.layers.shape == (3, 3, 6, 12)
    assert out.mask.tolist()[1] == [True] * 4 + [False] * 2
    torch.testing.assert_close(out.layers[:, 0, :, :6], out.layers[:, 0, :, 6:])
    assert torch.all(out.layers[1, :, 4:] == 0)


def test_skip_connections_switch():
    torch.manual_seed(0)
    on = BiLM(micro_config(use_skip_connections=True))
    off = BiLM(micro_config(use_skip_connections=False))
    off.load_state_dict(on.state_dict())
    on.stateful = off.stateful = False
    chars = random_chars(2, 5)
    a, b = on(chars).layers, off(chars).layers
    torch.testing.assert_close(a[:, :2], b[:, :2])
    torch.testing.assert_close(a[:, 2] - a[:, 1], b[:, 2])  # layer 2 = lstm(layer 1) + layer 1


def test_stateful_carries_and_stateless_repeats():
    model = BiLM(micro_config())
    chars = random_chars(2, 5)
    first, second = model(chars).layers, model(chars).layers
    assert not torch.allclose(first[:, 1:], second[:, 1:])  # state carried
    torch.testing.assert_close(first[:, 0], second[:, 0])  # token layer has no state
    model.stateful = False
    model.reset_state()
    a, b = model(chars).layers, model(chars).layers
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, first)


def test_dedup_encoder_matches_plain_encoder():
    model = BiLM(micro_config())
    chars = random_chars(3, 6, lengths=[6, 3, 0])
    chars[1, 1] = chars[0, 4]  # a repeated word
    got = model.encoder(chars)
    want = model.encoder.encode_unique(chars.view(-1, 50)).view(3, 6, -1) * (chars > 0).any(-1, keepdim=True)
    torch.testing.assert_close(got, want)


def test_lm_loss_is_mean_of_directions():
    torch.manual_seed(0)
    model = BiLM(micro_config())
    chars = random_chars(2, 4)
    fwd_t = torch.tensor([[1, 2, 3, -1], [4, 5, 6, 7]])
    bwd_t = torch.tensor([[-1, 8, 9, 10], [11, 12, 13, 14]])
    out, _ = model.lm_loss(chars, fwd_t, bwd_t)
    assert int(out.fwd_count) == 7 and int(out.bwd_count) == 7
    expected = 0.5 * (out.fwd_nll / 7 + out.bwd_nll / 7)
    torch.testing.assert_close(out.loss.detach(), expected)
    out.loss.backward()
    assert model.encoder.char_embed.weight.grad.abs().sum() > 0


def test_full_softmax_nll_is_cross_entropy():
    sm = FullSoftmax(5, 11).double()
    h = torch.randn(7, 5, dtype=torch.float64)
    t = torch.randint(0, 11, (7,))
    logits = h @ sm.proj.weight.T + sm.proj.bias
    want = -(logits - logits.logsumexp(-1, keepdim=True)).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(sm.nll(h, t), want)


def test_adaptive_softmax_normalises_and_agrees_with_its_nll():
    torch.manual_seed(0)
    sm = AdaptiveSoftmax(8, 50, [10, 30], 2.0).double()
    h = torch.randn(40, 8, dtype=torch.float64)
    logp = sm.log_probs(h)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(40, dtype=torch.float64))
    t = torch.tensor([0, 9, 10, 29, 30, 49] * 6 + [1, 2, 3, 4])
    torch.testing.assert_close(sm.nll(h, t), -logp.gather(1, t[:, None]).squeeze(1))


def test_adaptive_cutoffs_beyond_vocab_rejected_clearly():
    with pytest.raises(ValueError, match="cutoff"):
        BiLM(micro_config(softmax="adaptive", adaptive_cutoffs=[100, 200]))


@pytest.mark.parametrize("field,value,match", [
    ("lstm_dim", 0, "lstm_dim"), ("cell_clip", -1.0, "cell_clip"), ("filters", [[0, 3]], "filters"),
    ("softmax", "sampled", "softmax"), ("dropout", 1.5, "dropout"), ("lstm_impl", "cuda", "lstm_impl"),
])
def test_config_validation_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        micro_config(**{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="tiny"):
        preset("huge")


def test_triton_on_cpu_explains():
    cfg = micro_config(lstm_impl="triton")
    model = BiLM(cfg)
    import os
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter makes triton legal on CPU")
    with pytest.raises(RuntimeError, match="CUDA"):
        model(random_chars(1, 3))


def test_model_package_imports_no_distributed_code():
    import subprocess
    import sys
    code = ("import sys, elmo_dist.model; bad = [m for m in sys.modules if m.startswith(('deepspeed', 'wandb'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
def test_directions_stepped_together_equal_the_reference_loop(lengths):
    """The CPU path runs both LMs as one recurrence (lstm.run_bidirectional); in float64 its
    loss, carried state, embedding layers and every parameter gradient equal those of the
    plain per-step autograd loop (lstm_impl='reference'), run one direction at a time."""
    models = {}
    for impl in ("torch", "reference"):
        torch.manual_seed(3)
        models[impl] = BiLM(micro_config(lstm_impl=impl, cell_clip=0.8, proj_clip=0.6)).double()
    chars = random_chars(3, 5, lengths, seed=4)
    g = torch.Generator().manual_seed(5)
    targets = [torch.randint(0, 30, (3, 5), generator=g) for _ in range(2)]
    if lengths is not None:
        pad = torch.arange(5)[None] >= torch.tensor(lengths)[:, None]
        targets = [t.masked_fill(pad, -1) for t in targets]
    state = None
    results = {}
    for impl, model in models.items():
        s = torch.Generator().manual_seed(6)
        init = BiLMState(*(LSTMState(torch.randn(2, 3, 6, generator=s, dtype=torch.float64),
                                     torch.randn(2, 3, 12, generator=s, dtype=torch.float64)) for _ in range(2)))
        loss, state = model.lm_loss(chars, *targets, init)
        grads = torch.autograd.grad(loss.loss, list(model.parameters()))
        results[impl] = (loss.loss, state, grads, model.eval()(chars).layers)
    (l_t, s_t, g_t, e_t), (l_r, s_r, g_r, e_r) = results["torch"], results["reference"]
    torch.testing.assert_close(l_t, l_r, rtol=1e-12, atol=1e-12)
    for a, b in zip(s_t, s_r):
        torch.testing.assert_close(a.h, b.h, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.c, b.c, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip(models["torch"].named_parameters(), g_t, g_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(e_t, e_r, rtol=1e-12, atol=1e-12)
