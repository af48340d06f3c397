"""Documents -> the token lists the biLM and the bag of words see.

A document is tokenised line by line (nltk's tokenizers expect one sentence or line, and
``sent_tokenize`` needs downloaded data), the lines' tokens are concatenated, optionally
normalised, and cut to the first ``max_tokens``. For a news article that is the title and the
first sentences of the body.

Styles:
  * ``raw``: the tokenizer's tokens unchanged;
  * ``ptb``: the Penn Treebank LM text the demo biLM was trained on: lower case, a token with a
    digit and no letter becomes ``N``, tokens with no letter or digit are dropped ("$" kept).
    Character input copes with anything, but a biLM trained on PTB has never seen capitals,
    digits or most punctuation.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

STYLES = ("raw", "ptb")

_HAS_ALNUM = re.compile(r"[^\W_]")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_HAS_DIGIT = re.compile(r"\d")
_PTB_KEEP = {"$", "&", "'s"}


def ptb_normalise(tokens: Sequence[str]) -> list:
    out = []
    for tok in tokens:
        low = tok.lower()
        if _HAS_DIGIT.search(low) and not _HAS_LETTER.search(low):
            out.append("N")
        elif _HAS_ALNUM.search(low) or low in _PTB_KEEP:
            out.append(low)
    return out


def line_tokens(line: str, tokenize: Callable[[str], list], style: str = "raw") -> list:
    """One line's tokens: tokenised, tokens holding whitespace dropped, normalised per ``style``."""
    line = line.strip()
    if not line:
        return []
    toks = [t for t in tokenize(line) if t and not any(c.isspace() for c in t)]
    return ptb_normalise(toks) if style == "ptb" else toks


def document_tokens(text: str, tokenize: Callable[[str], list], style: str = "raw",
                    max_tokens: int | None = None) -> list:
    """One document's tokens: every non-blank line tokenised, joined, normalised, cut."""
    if style not in STYLES:
        raise ValueError(f"unknown text style {style!r}; choose one of: {', '.join(STYLES)}")
    tokens: list = []
    for line in text.splitlines():
        if max_tokens is not None and len(tokens) >= max_tokens:
            break
        tokens += line_tokens(line, tokenize, style)
    return tokens[:max_tokens] if max_tokens is not None else tokens
