"""The line tokenizers: names, outputs on a few hand-checked lines, no nltk data needed."""
import pytest

from elmo_dist.data.tokenize import TOKENIZERS, get_tokenizer


def test_names():
    assert TOKENIZERS == ("whitespace", "treebank", "nltk", "toktok")


def test_whitespace_is_plain_split():
    tok = get_tokenizer("whitespace")
    assert tok("  the cat\tsat \n") == ["the", "cat", "sat"]
    assert tok("don't stop.") == ["don't", "stop."]
    assert tok("   ") == []


def test_treebank():
    tok = get_tokenizer("treebank")
    assert tok("They don't like it, do they?") == ["They", "do", "n't", "like", "it", ",", "do", "they", "?"]
    assert tok("It costs $5.") == ["It", "costs", "$", "5", "."]


def test_nltk_word_tokenizer():
    tok = get_tokenizer("nltk")
    assert tok("I can't go.") == ["I", "ca", "n't", "go", "."]
    assert tok('He said "hi".') == ["He", "said", "``", "hi", "''", "."]


def test_toktok():
    tok = get_tokenizer("toktok")
    assert tok("Hello, world!") == ["Hello", ",", "world", "!"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_every_tokenizer_handles_unicode_and_blank(name):
    tok = get_tokenizer(name)
    assert tok("") == []
    assert "日本" in tok("日本 café")
    assert "café" in tok("日本 café")


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="whitespace, treebank, nltk, toktok"):
        get_tokenizer("spacy")
