"""ScalarMix and the Elmo module, against formulas written out here in float64."""
import pytest
import torch

from elmo_dist import BiLM, Elmo, ModelConfig, ScalarMix, batch_to_ids

SENTENCES = [["a", "tiny", "test", "."], ["another", "one"], ["x"]]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bilm(stateful=False) -> BiLM:
    torch.manual_seed(0)
    cfg = ModelConfig(lstm_dim=20, projection_dim=6, n_layers=2, char_embed_dim=4, filters=[[1, 4], [2, 5]],
                      n_highway=1, vocab_size=0, dropout=0.2)
    return BiLM(cfg, stateful=stateful).eval()


def reference_mix(layers, mask, w, gamma, layer_norm):
    """gamma * sum_j softmax(w)_j * h_j; layer norm with one mean/var over the unmasked elements."""
    layers = [h.double() for h in layers]
    s = torch.softmax(torch.tensor(w, dtype=torch.float64), 0)
    out = 0
    for j, h in enumerate(layers):
        if layer_norm:
            vals = h[mask]  # (n_unmasked, D)
            mean = vals.mean()
            var = ((vals - mean) ** 2).mean()
            h = (h - mean) / torch.sqrt(var + 1e-12)
        out = out + s[j] * h
    return gamma * out


@pytest.mark.parametrize("layer_norm", [False, True])
def test_scalar_mix_matches_formula(layer_norm):
    torch.manual_seed(1)
    layers = [torch.randn(3, 5, 7) * (j + 1) + j for j in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    w = [0.3, -1.0, 2.0]
    mix = ScalarMix(3, do_layer_norm=layer_norm, initial_scalar_parameters=w, trainable=True)
    with torch.no_grad():
        mix.gamma.fill_(1.7)
    got = mix(layers, mask)
    want = reference_mix(layers, mask, w, 1.7, layer_norm)
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)
    # A stacked (B, L, T, D) tensor works the same as a list.
    assert torch.equal(mix(torch.stack(layers, 1), mask), got)


def test_layer_norm_ignores_masked_elements():
    torch.manual_seed(2)
    layers = [torch.randn(2, 4, 3) for _ in range(2)]
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    mix = ScalarMix(2, do_layer_norm=True)
    a = mix(layers, mask)
    noisy = [h.clone() for h in layers]
    for h in noisy:
        h[~mask] = 1e6  # garbage at padding must not move the statistics
    b = mix(noisy, mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-6)


def test_scalar_mix_defaults_and_errors():
    mix = ScalarMix(3)
    x = [torch.full((1, 2, 2), float(j)) for j in range(3)]
    assert torch.allclose(mix(x), torch.full((1, 2, 2), 1.0))  # equal weights: the plain mean
    assert mix.scalar_parameters.requires_grad and mix.gamma.requires_grad
    fixed = ScalarMix(3, initial_scalar_parameters=[1, 2, 3], trainable=False)
    assert not fixed.scalar_parameters.requires_grad and not fixed.gamma.requires_grad
    with pytest.raises(ValueError, match="mixture_size"):
        mix(x[:2])
    with pytest.raises(ValueError, match="mask"):
        ScalarMix(3, do_layer_norm=True)(x)
    with pytest.raises(ValueError, match="initial_scalar_parameters"):
        ScalarMix(3, initial_scalar_parameters=[1.0])


def test_elmo_outputs_are_mixes_of_the_bilm_layers():
    bilm = tiny_bilm()
    elmo = Elmo(bilm, num_output_representations=2, dropout=0.0, do_layer_norm=True).eval()
    with torch.no_grad():
        elmo.scalar_mixes[1].scalar_parameters.copy_(torch.tensor([1.0, -2.0, 0.5]))
    chars = batch_to_ids(SENTENCES)
    out = elmo(chars)
    assert len(out.representations) == 2 and elmo.get_output_dim() == 12
    with torch.no_grad():
        layers = bilm(chars)
    assert torch.equal(out.mask, layers.mask)
    for mix, rep in zip(elmo.scalar_mixes, out.representations):
        assert rep.shape == (3, 4, 12)
        want = reference_mix(list(layers.layers.unbind(1)), layers.mask, mix.scalar_parameters.tolist(),
                             mix.gamma.item(), True)
        want = want * layers.mask.unsqueeze(-1)
        assert torch.allclose(rep.double(), want, atol=1e-5)
        assert not rep[~out.mask].any()  # zero at padding


def test_frozen_bilm_gets_no_gradient_and_stays_in_eval_mode():
    bilm = tiny_bilm()
    elmo = Elmo(bilm, 1, requires_grad=False, dropout=0.5)
    elmo.train()
    assert elmo.training and not bilm.training  # biLM dropout stays off
    rep = elmo(batch_to_ids(SENTENCES)).representations[0]
    rep.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in bilm.parameters())
    assert elmo.scalar_mixes[0].scalar_parameters.grad is not None
    assert elmo.scalar_mixes[0].gamma.grad is not None


def test_trainable_bilm_gets_gradient():
    bilm = tiny_bilm()
    elmo = Elmo(bilm, 1, requires_grad=True, dropout=0.0)
    elmo.train()
    assert bilm.training
    elmo(batch_to_ids(SENTENCES)).representations[0].pow(2).sum().backward()
    grads = [p.grad for p in bilm.parameters()]
    assert all(g is not None for g in grads)
    assert bilm.forward_lm.layers[0].recurrent_weight.grad.abs().sum() > 0


def test_dropout_applies_in_training_only():
    elmo = Elmo(tiny_bilm(), 1, dropout=0.5)
    chars = batch_to_ids(SENTENCES)
    elmo.eval()
    a, b = elmo(chars).representations[0], elmo(chars).representations[0]
    assert torch.equal(a, b)
    elmo.train()
    torch.manual_seed(3)
    c = elmo(chars).representations[0]
    mask = elmo(chars).mask
    assert (c[mask] == 0).float().mean() > 0.2  # about half the unmasked values dropped


def test_extra_leading_dimensions():
    elmo = Elmo(tiny_bilm(), 1, dropout=0.0).eval()
    chars = batch_to_ids(SENTENCES + [["one", "more"]])  # (4, 4, 50)
    flat = elmo(chars)
    nested = elmo(chars.view(2, 2, 4, 50))
    assert nested.representations[0].shape == (2, 2, 4, 12) and nested.mask.shape == (2, 2, 4)
    assert torch.allclose(nested.representations[0].reshape(4, 4, 12), flat.representations[0], atol=1e-6)


def test_stateful_bilm_carries_state_stateless_does_not():
    chars = batch_to_ids(SENTENCES)
    stateless = Elmo(tiny_bilm(stateful=False), 1, dropout=0.0).eval()
    assert torch.equal(stateless(chars).representations[0], stateless(chars).representations[0])
    stateful = Elmo(tiny_bilm(stateful=True), 1, dropout=0.0).eval()
    first, second = stateful(chars).representations[0], stateful(chars).representations[0]
    assert not torch.allclose(first, second)


def test_from_allennlp_defaults_to_stateless(tmp_path):
    bilm = tiny_bilm()
    bilm.to_allennlp(tmp_path)
    elmo = Elmo.from_allennlp(tmp_path / "options.json", tmp_path / "lm_weights.hdf5", 2, dropout=0.0)
    assert not elmo.bilm.stateful and len(elmo.scalar_mixes) == 2
    chars = batch_to_ids(SENTENCES)
    assert torch.equal(elmo(chars).representations[0], elmo(chars).representations[0])


def test_elmo_argument_errors():
    with pytest.raises(ValueError, match="num_output_representations"):
        Elmo(tiny_bilm(), 0)
    with pytest.raises(ValueError, match="dropout"):
        Elmo(tiny_bilm(), 1, dropout=1.5)
