"""ELMo character ids, with expectations written out from the rule in docs/DESIGN.md.

Unshifted: begin-of-word 258, end-of-word 259, padding 260, <S> 256, </S> 257, bytes 0..255;
every id is shifted by +1. So shifted: BOW 259, EOW 260, PAD 261, <S> 257, </S> 258, byte b -> b+1.
"""
import numpy as np
import pytest
import torch

from elmo_dist.data.chars import (
    BOS_TOKEN,
    EOS_TOKEN,
    MAX_WORD_LENGTH,
    UNK_TOKEN,
    CharIdCache,
    batch_to_ids,
    word_to_char_ids,
)

BOW, EOW, PAD = 259, 260, 261


def expected(byte_values):
    """Shifted ids for a list of raw byte values, framed and padded by hand."""
    ids = [BOW] + [b + 1 for b in byte_values] + [EOW]
    return ids + [PAD] * (50 - len(ids))


def test_constants():
    assert MAX_WORD_LENGTH == 50
    assert (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN) == ("<S>", "</S>", "<UNK>")


def test_plain_words():
    assert word_to_char_ids("a") == [259, 98, 260] + [261] * 47
    # c=99, a=97, t=116 -> shifted 100, 98, 117
    assert word_to_char_ids("cat") == [259, 100, 98, 117, 260] + [261] * 45
    assert word_to_char_ids("N.") == [259, 79, 47, 260] + [261] * 46


def test_sentence_boundaries_are_single_characters():
    assert word_to_char_ids("<S>") == [259, 257, 260] + [261] * 47
    assert word_to_char_ids("</S>") == [259, 258, 260] + [261] * 47
    # Other bracketed tokens are ordinary words: "<unk>" is spelled out.
    assert word_to_char_ids("<unk>") == expected([60, 117, 110, 107, 62])


def test_long_word_cut_to_48_bytes():
    ids = word_to_char_ids("x" * 60)  # 'x' = 120 -> 121
    assert ids == [259] + [121] * 48 + [260]
    assert word_to_char_ids("y" * 48) == [259] + [122] * 48 + [260]
    assert word_to_char_ids("y" * 49) == [259] + [122] * 48 + [260]
    assert word_to_char_ids("y" * 47) == [259] + [122] * 47 + [260, 261]


def test_non_ascii_counts_utf8_bytes():
    # é = C3 A9
    assert word_to_char_ids("café") == [259, 100, 98, 103, 0xC3 + 1, 0xA9 + 1, 260] + [261] * 43
    # 日 = E6 97 A5, 本 = E6 9C AC
    assert word_to_char_ids("日本") == [259, 231, 152, 166, 231, 157, 173, 260] + [261] * 42


def test_multibyte_word_cut_inside_a_character():
    # 17 x "日" is 51 bytes: the cut keeps 48 bytes = 16 whole characters.
    assert word_to_char_ids("日" * 17) == [259] + [231, 152, 166] * 16 + [260]
    # 25 x "é" is 50 bytes: 24 whole characters = 48 bytes.
    assert word_to_char_ids("é" * 25) == [259] + [0xC4, 0xAA] * 24 + [260]
    # "a" + 24 x "é" = 49 bytes: the cut splits the last é, leaving its first byte.
    assert word_to_char_ids("a" + "é" * 24) == [259, 98] + [0xC4, 0xAA] * 23 + [0xC4, 260]


def test_word_rejects_non_str():
    with pytest.raises(ValueError, match="str"):
        word_to_char_ids(b"abc")


def test_batch_to_ids_pads_with_zero_tokens():
    ids = batch_to_ids([["I", "saw"], ["a", "cat", "."], []])
    assert ids.dtype == torch.int64
    assert tuple(ids.shape) == (3, 3, 50)
    assert ids[0, 0].tolist() == expected([73])
    assert ids[0, 1].tolist() == expected([115, 97, 119])
    assert ids[0, 2].tolist() == [0] * 50
    assert ids[1, 2].tolist() == expected([46])
    assert ids[2].eq(0).all()
    # No <S>/</S> added: the first token of row 1 is "a" itself.
    assert ids[1, 0].tolist() == expected([97])


def test_batch_to_ids_empty_sentences():
    assert tuple(batch_to_ids([[], []]).shape) == (2, 0, 50)
    assert tuple(batch_to_ids([]).shape) == (0, 0, 50)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("a sentence", "list of token lists"),
        (("a", "b"), "list of token lists"),
        (["a", "b"], "wrap it"),
        ([["a", 3]], r"batch\[0\]\[1\] must be a str"),
        ([["a"], None], r"batch\[1\]"),
    ],
)
def test_batch_to_ids_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        batch_to_ids(bad)


def test_cache_rows_and_padding():
    cache = CharIdCache()
    out = cache.ids(["cat", None, "<S>", "cat"])
    assert out.dtype == np.int64 and out.shape == (4, 50)
    assert out[0].tolist() == [259, 100, 98, 117, 260] + [261] * 45
    assert out[1].tolist() == [0] * 50
    assert out[2].tolist() == [259, 257, 260] + [261] * 47
    assert out[3].tolist() == out[0].tolist()
    assert len(cache) == 2 and "cat" in cache


def test_cache_bounded_size_stays_correct():
    cache = CharIdCache(max_words=3)
    words = [f"w{i}" for i in range(10)]
    for start in range(0, 10, 2):
        chunk = words[start : start + 2]
        out = cache.ids(chunk)
        assert [row.tolist() for row in out] == [expected(list(w.encode())) for w in chunk]
        assert len(cache) <= 3
    # A single call with more distinct words than max_words still answers correctly.
    out = cache.ids(words)
    assert [row.tolist() for row in out] == [expected(list(w.encode())) for w in words]


def test_cache_rejects_non_str():
    with pytest.raises(ValueError, match="str"):
        CharIdCache().ids(["ok", 5])
    with pytest.raises(ValueError, match="max_words"):
        CharIdCache(max_words=0)
