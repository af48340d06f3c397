"""Word vocabulary of the softmax, in the bilm-tf file format.

The file is UTF-8, one token per line: ``<S>``, ``</S>``, ``<UNK>`` first, then the words by
descending corpus frequency. Frequency order matters beyond looks: the sampled softmax draws
its negatives from a log-uniform (Zipf) distribution over ids, which is only a good proposal
when id order is frequency order. Ties are broken by the word itself so that a vocabulary is a
pure function of its counts.
"""
from __future__ import annotations

import os

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN
from elmo_dist.data.corpus import Corpus, SkipReport
from elmo_dist.data.textio import sniff_text_file
from elmo_dist.utils import atomic_write_text

SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

class Vocabulary:
    """An ordered list of distinct words with O(1) word -> id lookup.

    Build one with :meth:`build` (from counts) or :meth:`from_file`. The three special tokens
    must be present; :meth:`build` puts them at ids 0, 1, 2, while a file loaded from
    elsewhere may place them anywhere (``bos_id``/``eos_id``/``unk_id`` say where).
    """

    def __init__(self, words: Sequence[str]) -> None:
        index: dict[str, int] = {}
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word or "\n" in word or "\r" in word:
                raise ValueError(f"vocabulary word {i} is {word!r}: words must be non-empty str without line breaks")
            if word in index:
                raise ValueError(f"vocabulary word {word!r} appears twice (ids {index[word]} and {i})")
            index[word] = i
        missing = [t for t in SPECIAL_TOKENS if t not in index]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}; it needs {list(SPECIAL_TOKENS)}")
        self._words = list(words)
        self._index = index
        self.bos_id: int = index[BOS_TOKEN]
        self.eos_id: int = index[EOS_TOKEN]
        self.unk_id: int = index[UNK_TOKEN]

    @classmethod
    def build(cls, counts: Counter, min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Specials, then every word with ``count >= min_count`` by (count desc, word asc).

        ``max_size`` caps the total size, the 3 specials included. Special tokens found in
        ``counts`` are not added twice.
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < len(SPECIAL_TOKENS)
        ):
            raise ValueError(
                f"max_size must be None or an int >= {len(SPECIAL_TOKENS)} (it counts {list(SPECIAL_TOKENS)}), "
                f"got {max_size!r}"
            )
        kept = [(w, c) for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS]
        kept.sort(key=lambda wc: (-wc[1], wc[0]))
        words = [w for w, _ in kept]
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *words])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Vocabulary:
        """Load a vocabulary file: one token per line (trailing empty lines ignored)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist")
        sniff_text_file(path)  # a UTF-16/32 file is refused with the iconv command that converts it
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"vocabulary file {str(path)!r} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        # Split on "\n" only: a word may contain other Unicode line separators.
        lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
        while lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise ValueError(f"vocabulary file {str(path)!r} is empty")
        for n, line in enumerate(lines, start=1):
            if line == "":
                raise ValueError(f"vocabulary file {str(path)!r}: line {n} is empty")
        try:
            return cls(lines)
        except ValueError as exc:
            raise ValueError(f"vocabulary file {str(path)!r}: {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the file atomically: a temporary file in the same folder, then ``os.replace``."""
        atomic_write_text(path, "\n".join(self._words) + "\n")

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    @property
    def words(self) -> list[str]:
        """The words in id order (a copy)."""
        return list(self._words)

    @property
    def index(self) -> dict[str, int]:
        """The word -> id dict itself, for hot loops that want ``.get`` bound once; do not modify."""
        return self._index

    def id(self, word: str) -> int:
        """Id of ``word``; ``unk_id`` for a word not in the vocabulary."""
        return self._index.get(word, self.unk_id)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``, unknown words mapped to ``unk_id``."""
        get, unk = self._index.get, self.unk_id
        return [get(t, unk) for t in tokens]

def count_words(corpus: Corpus, report: SkipReport | None = None, progress: bool = False) -> Counter:
    """Token counts over every kept line of ``corpus`` (no ``<S>``/``</S>`` added).

    ``report`` (if given) receives the skip counts; ``progress`` shows a tqdm bar in lines.
    """
    counts: Counter = Counter()
    lines = corpus.iter_sentences(report)
    if progress:
        from tqdm import tqdm

        lines = tqdm(lines, unit="lines", desc="counting words")
    for tokens in lines:
        counts.update(tokens)
    return counts
