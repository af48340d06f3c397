"""ELMo character ids: the input format of the biLM's character CNN.

The rule (bilm-tf ``UnicodeCharsVocabulary``, AllenNLP ``ELMoCharacterMapper``):

* a word is its UTF-8 bytes, cut to ``MAX_WORD_LENGTH - 2 = 48`` bytes;
* the bytes are framed by begin-of-word 258 and end-of-word 259 and padded with 260 to 50;
* the sentence boundaries ``<S>`` and ``</S>`` are single "characters" 256 and 257 in
  position 1 of the frame: ``[258, 256, 259, 260, ...]`` and ``[258, 257, 259, 260, ...]``;
* every id is then shifted by +1, so that id 0 is free for padding: a padding token is 50
  zeros. The character embedding therefore has 262 rows (row 0 is the padding row).

Everything public here returns the *shifted* ids, ready for the model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MAX_WORD_LENGTH = 50
"""Characters per token, the two frame characters included."""
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
UNK_TOKEN = "<UNK>"

# Unshifted ids of the special characters (bilm-tf numbering; bytes are 0..255).
BOS_CHAR = 256
EOS_CHAR = 257
BOW_CHAR = 258
EOW_CHAR = 259
PAD_CHAR = 260
NUM_CHAR_IDS = 262
"""Size of the shifted id space: 256 bytes + 5 specials + the padding id 0."""

_MAX_WORD_BYTES = MAX_WORD_LENGTH - 2


def _frame(chars: Sequence[int]) -> list[int]:
    """Frame unshifted characters with BOW/EOW, pad to 50 and shift every id by +1."""
    ids = [BOW_CHAR, *chars, EOW_CHAR]
    ids.extend([PAD_CHAR] * (MAX_WORD_LENGTH - len(ids)))
    return [i + 1 for i in ids]


_BOS_IDS = _frame([BOS_CHAR])
_EOS_IDS = _frame([EOS_CHAR])


def word_to_char_ids(word: str) -> list[int]:
    """Shifted character ids of one token: a list of ``MAX_WORD_LENGTH`` ints in [1, 261].

    ``<S>`` and ``</S>`` map to their single boundary character. Other words are encoded as
    UTF-8 (characters that cannot be encoded, i.e. lone surrogates, are dropped, as AllenNLP
    does) and cut to 48 *bytes*, so a multi-byte character may be cut in the middle; that is
    the format the published weights were trained with.
    """
    if not isinstance(word, str):
        raise ValueError(f"a token must be a str, got {type(word).__name__}: {word!r}")
    if word == BOS_TOKEN:
        return list(_BOS_IDS)
    if word == EOS_TOKEN:
        return list(_EOS_IDS)
    return _frame(word.encode("utf-8", "ignore")[:_MAX_WORD_BYTES])


class CharIdCache:
    """Memoised :func:`word_to_char_ids` for the data pipeline.

    A dict maps each word to a row of one growing int16 table (ids fit in 9 bits; int16 keeps
    a 1M-word cache at 100 MB instead of 400 MB in int64). Row 0 is the all-zero padding row,
    and ``None`` in the input of :meth:`ids` selects it, so callers can pad without a branch.

    ``max_words`` bounds memory on corpora with an open vocabulary: when a call would push
    the cache past it, the cache is emptied first (the rows returned are copies, so nothing
    the caller holds is invalidated).
    """

    def __init__(self, max_words: int = 1_000_000) -> None:
        if not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {max_words!r}")
        self.max_words = max_words
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str | None, int] = {None: 0}
        self._table = np.zeros((1024, MAX_WORD_LENGTH), dtype=np.int16)  # (capacity, 50)

    def __len__(self) -> int:
        """Number of cached words (the padding row not counted)."""
        return len(self._index) - 1

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word in self._index

    def _add(self, words: set[str]) -> None:
        """Append the rows of ``words`` (none of them cached yet) to the table."""
        first = len(self._index)
        need = first + len(words)
        if need > len(self._table):
            grown = np.zeros((max(need, 2 * len(self._table)), MAX_WORD_LENGTH), dtype=np.int16)
            grown[:first] = self._table[:first]
            self._table = grown
        for row, word in enumerate(words, start=first):
            self._table[row] = word_to_char_ids(word)
            self._index[word] = row

    def ids(self, words: Sequence[str | None]) -> np.ndarray:
        """Shifted char ids of ``words``: int64 array (N, 50); ``None`` gives a row of zeros."""
        get = self._index.get
        rows = [get(w) for w in words]
        if None in rows:
            missing = {w for w, r in zip(words, rows) if r is None}
            bad = [w for w in missing if not isinstance(w, str)]
            if bad:
                raise ValueError(f"a token must be a str, got {type(bad[0]).__name__}: {bad[0]!r}")
            if len(self) + len(missing) > self.max_words:
                # Start afresh rather than evict: one batch never needs more than it holds.
                self._clear()
                get = self._index.get
                missing = {w for w in words if w is not None}
            self._add(missing)
            rows = [get(w) for w in words]
        return self._table[rows].astype(np.int64)  # (N, 50)


def batch_to_ids(batch: list[list[str]]) -> torch.Tensor:
    """ELMo character ids of a batch of tokenised sentences: LongTensor (B, T, 50).

    ``T`` is the longest sentence; the tokens of shorter sentences are followed by padding
    tokens (all 50 ids zero). No sentence boundaries are added: the model adds ``<S>`` and
    ``</S>`` itself, exactly as with AllenNLP's ``batch_to_ids``.
    """
    if not isinstance(batch, list):
        raise ValueError(
            f"batch must be a list of token lists, got {type(batch).__name__}; "
            "for one sentence pass [tokens]"
        )
    for i, sentence in enumerate(batch):
        if not isinstance(sentence, (list, tuple)):
            hint = " (did you pass one sentence? wrap it: [tokens])" if isinstance(sentence, str) else ""
            raise ValueError(
                f"batch[{i}] must be a list of str tokens, got {type(sentence).__name__}{hint}"
            )
        for j, token in enumerate(sentence):
            if not isinstance(token, str):
                raise ValueError(f"batch[{i}][{j}] must be a str, got {type(token).__name__}: {token!r}")
    longest = max((len(s) for s in batch), default=0)
    out = np.zeros((len(batch), longest, MAX_WORD_LENGTH), dtype=np.int64)  # (B, T, 50)
    seen: dict[str, list[int]] = {}
    for i, sentence in enumerate(batch):
        for j, token in enumerate(sentence):
            ids = seen.get(token)
            if ids is None:
                ids = seen[token] = word_to_char_ids(token)
            out[i, j] = ids
    return torch.from_numpy(out)
