"""The character CNN that convolves each token's characters only, against a float64 reference
that convolves the whole 50-slot frame (the bilm-tf/AllenNLP computation)."""
import pytest
import torch
import torch.nn.functional as F

from elmo_dist.data import chars as char_ids
from elmo_dist.data.chars import word_to_char_ids
from elmo_dist.model import ModelConfig
from elmo_dist.model.char_cnn import PAD_CHAR_ID, CharCNNEncoder

# Lengths 1..48 bytes (48 fills the frame: no padding window at all), boundaries, a multi-byte
# word, and words whose framed length sits on a bucket edge.
WORDS = ["a", "of", "the", "cat", "seven", "sixsix", "<S>", "</S>", "Zürich", "naïve-café",
         "x" * 46, "y" * 47, "z" * 48, "w" * 60, "2", "12,345", "antidisestablishmentarianism"]


def full_frame_reference(enc: CharCNNEncoder, chars: torch.Tensor) -> torch.Tensor:
    """conv over all C slots -> max -> activation -> highway (TF gates) -> projection."""
    e = enc.char_embed.weight[chars].transpose(1, 2)  # (N, d, C)
    feats = [F.conv1d(e, conv.weight, conv.bias).amax(dim=2) for conv in enc.convs]
    x = enc.activation(torch.cat(feats, dim=1))
    for hw in enc.highways:
        g = torch.sigmoid(x @ hw.carry.weight.T + hw.carry.bias)
        x = g * torch.relu(x @ hw.transform.weight.T + hw.transform.bias) + (1 - g) * x
    return x @ enc.proj.weight.T + enc.proj.bias


def make_encoder(filters, activation="relu", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(lstm_dim=8, projection_dim=5, n_layers=1, char_embed_dim=4, filters=filters,
                      n_highway=2, vocab_size=0, activation=activation)
    enc = CharCNNEncoder(cfg).double()
    with torch.no_grad():  # make the padding character's windows win some maxima
        enc.char_embed.weight[PAD_CHAR_ID] *= 3
    return enc


def test_pad_id_is_the_data_pipelines():
    assert PAD_CHAR_ID == char_ids.PAD_CHAR + 1


@pytest.mark.parametrize("filters,activation", [([[1, 4], [2, 6], [3, 5], [7, 8]], "relu"),
                                                ([[2, 3], [5, 4]], "tanh")])
def test_per_token_convolution_matches_full_frame_with_gradients(filters, activation):
    enc = make_encoder(filters, activation)
    chars = torch.tensor([word_to_char_ids(w) for w in WORDS])  # (N, 50)
    got = enc.encode_unique(chars)
    want = full_frame_reference(enc, chars)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)

    # A padding window must have been the maximum somewhere, or the test shows nothing.
    e = enc.char_embed.weight[chars].transpose(1, 2)
    widest = enc.convs[-1]
    out = F.conv1d(e, widest.weight, widest.bias)  # (N, count, positions)
    assert (out.argmax(dim=2) >= 12).any()

    weights = torch.randn_like(want)
    grads = torch.autograd.grad((got * weights).sum(), list(enc.parameters()))
    grads_want = torch.autograd.grad((want * weights).sum(), list(enc.parameters()))
    for (name, _), g, w in zip(enc.named_parameters(), grads, grads_want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_frame_without_padding_and_empty_batch():
    enc = make_encoder([[1, 2], [3, 4]])
    full = torch.tensor([word_to_char_ids("q" * 48)] * 2)  # no padding slot at all
    torch.testing.assert_close(enc.encode_unique(full), full_frame_reference(enc, full), rtol=0, atol=1e-12)
    assert enc.encode_unique(torch.zeros(0, 50, dtype=torch.long)).shape == (0, 5)
