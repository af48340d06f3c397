"""Word tokenizers for raw corpus lines: one line of text in, a list of tokens out.

``whitespace`` (the default) is for pre-tokenized corpora such as the Penn Treebank LM data
or the 1B Word Benchmark: it splits on runs of whitespace and nothing else. The other three
are nltk tokenizers that run on a single line and need no downloaded nltk data; they are
for raw text (news articles, web text). nltk's ``word_tokenize`` without
``preserve_line=True`` and ``sent_tokenize`` need the ``punkt_tab`` model, which cannot be
downloaded on an offline machine, so they are deliberately not offered: the corpus is read
one line at a time and each line is treated as one sentence.
"""
from __future__ import annotations

from typing import Callable

TOKENIZERS = ("whitespace", "treebank", "nltk", "toktok")
"""Names accepted by :func:`get_tokenizer`; ``whitespace`` is the default everywhere."""

Tokenizer = Callable[[str], list[str]]


def _whitespace(line: str) -> list[str]:
    return line.split()


def _nltk_method(class_name: str) -> Tokenizer:
    """The bound ``tokenize`` of a fresh nltk tokenizer; nltk is imported only when asked for."""
    try:
        import nltk.tokenize
    except ImportError as exc:
        from elmo_dist.errors import MissingPackage
        raise MissingPackage(
            f"the {class_name} tokenizer needs nltk: pip install 'nltk>=3.8'"
        ) from exc
    return getattr(nltk.tokenize, class_name)().tokenize


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (one of :data:`TOKENIZERS`).

    * ``whitespace``: ``str.split`` (pre-tokenized text);
    * ``treebank``: nltk ``TreebankWordTokenizer`` (Penn Treebank conventions, ``don't`` ->
      ``do n't``); it expects one sentence, so only the final period is split off;
    * ``nltk``: nltk ``NLTKWordTokenizer``, the improved Treebank tokenizer behind
      ``word_tokenize`` (also splits a period that ends the line, handles more Unicode quotes);
    * ``toktok``: nltk ``ToktokTokenizer``, a fast regex tokenizer that works for many languages.
    """
    if name == "whitespace":
        return _whitespace
    if name == "treebank":
        return _nltk_method("TreebankWordTokenizer")
    if name == "nltk":
        return _nltk_method("NLTKWordTokenizer")
    if name == "toktok":
        return _nltk_method("ToktokTokenizer")
    raise ValueError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")
