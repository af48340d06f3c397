"""Streaming reader of a text corpus: one sentence per line, any number of files.

The corpus is never held in memory. Its files are seen as one concatenated byte string of
``total_bytes`` bytes (in the order of :attr:`Corpus.files`), and a *line belongs to the byte
offset where it starts*. :meth:`Corpus.iter_lines_between` streams the lines that start in
``[start, end)``, so any partition of ``[0, total_bytes)`` into intervals partitions the lines:
that is how each batch row, and each distributed rank, owns a contiguous disjoint region of
the corpus without an index, and how a reader resumes exactly from a saved byte offset.

Bad input is counted, never fatal: lines that are not valid UTF-8, blank lines, lines over
``max_line_bytes``, empty files and binary files are skipped and tallied in a :class:`SkipReport`.
Two things are refused, with the fix: a UTF-16/32 file (by its byte-order mark; see
``data.textio``) and a path that is not a regular file (a FIFO, ``/dev/zero``). Lines end at
``\n`` only, an optional ``\r`` before it dropped.
"""
from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

from elmo_dist.data.textio import sniff_text_file
from elmo_dist.data.tokenize import get_tokenizer

_SKIP_CHUNK_BYTES = 1 << 16
"""Read size used to step over the rest of an over-long or partial line."""


def resolve_corpus_paths(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand corpus specs into a deterministic list of files.

    Each spec is an existing file; a directory (every regular file below it, recursively,
    sorted by path, hidden files and folders skipped); or a glob pattern (``**`` allowed;
    matches sorted, directories among them expanded as above). A spec that matches no file
    raises ``FileNotFoundError``. A file named twice is kept at its first place.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not specs:
        raise ValueError("no corpus given: pass at least one file, directory or glob")
    out: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        spec_str = os.fspath(spec)
        path = Path(spec_str)
        # An existing path wins over glob syntax: "data[1].txt" is a file name, not a class.
        if path.exists():
            if not (path.is_dir() or path.is_file()):
                raise ValueError(f"corpus {spec_str!r} is {_kind_of(path)}, not a regular file or folder: byte offsets "
                                 "index into the corpus, so it must be files on disk (copy a stream to a file first)")
            candidates = [path]
        else:
            candidates = [Path(m) for m in sorted(glob.glob(spec_str, recursive=True))]
        found = []
        for cand in candidates:
            if cand.is_dir():
                found.extend(_files_below(cand))
            elif cand.is_file():
                found.append(cand)
        if not found:
            raise FileNotFoundError(f"corpus spec {spec_str!r} matches no file")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _kind_of(path: Path) -> str:
    """What a non-regular path is, in words."""
    import stat
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _files_below(directory: Path) -> list[Path]:
    """Regular files below ``directory``, sorted by relative path, hidden entries skipped."""
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root, n) for n in names if not n.startswith("."))
    return sorted((f for f in files if f.is_file()), key=lambda f: f.relative_to(directory).parts)


def split_regions(total_bytes: int, num_regions: int) -> list[tuple[int, int]]:
    """``num_regions`` contiguous, disjoint byte intervals ``[start, end)`` covering the corpus."""
    if num_regions < 1:
        raise ValueError(f"num_regions must be >= 1, got {num_regions}")
    return [(r * total_bytes // num_regions, (r + 1) * total_bytes // num_regions) for r in range(num_regions)]


@dataclass
class SkipReport:
    """What a reader kept and skipped. Counts add up over everything read, passes included.

    ``lines_read`` and ``tokens_read`` count the lines yielded as sentences and their tokens;
    the other fields count skipped lines by reason (and empty files).
    """

    lines_read: int = 0
    tokens_read: int = 0
    invalid_utf8: int = 0
    """Lines that are not valid UTF-8."""
    blank: int = 0
    """Lines with no token (empty or whitespace only)."""
    too_long: int = 0
    """Lines over ``max_line_bytes`` bytes (line terminator not counted)."""
    empty_files: int = 0
    binary_files: int = 0
    """Files left out of the corpus as not text (see data.textio)."""

    @property
    def lines_skipped(self) -> int:
        return self.invalid_utf8 + self.blank + self.too_long

    def merge(self, other: SkipReport) -> SkipReport:
        """Add the counts of ``other`` to this report; returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, counts: dict[str, int]) -> SkipReport:
        return cls(**{f.name: int(counts.get(f.name, 0)) for f in fields(cls)})

    def summary(self) -> str:
        """One line, e.g. ``read 3 lines (12 tokens); skipped 1 invalid UTF-8, 2 blank, 0 too long; 1 empty file``."""
        return (
            f"read {self.lines_read} lines ({self.tokens_read} tokens); skipped "
            f"{self.invalid_utf8} invalid UTF-8, {self.blank} blank, {self.too_long} too long; "
            f"{self.empty_files} empty file{'' if self.empty_files == 1 else 's'}"
            + (f", {self.binary_files} binary file{'' if self.binary_files == 1 else 's'} left out"
               if self.binary_files else "")
        )


class Corpus:
    """A list of text files read as one stream of tokenised lines.

    ``paths`` are corpus specs (see :func:`resolve_corpus_paths`); ``tokenizer`` is a name
    from :data:`~elmo_dist.data.tokenize.TOKENIZERS` or a callable ``str -> list[str]``;
    lines longer than ``max_line_bytes`` bytes are skipped. File sizes are taken once, here:
    the files must not change while the corpus is in use (byte offsets index into them).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        tokenizer: str | Callable[[str], list[str]] = "whitespace",
        max_line_bytes: int = 1_000_000,
    ) -> None:
        if not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be a positive int, got {max_line_bytes!r}")
        self.files: list[Path] = []
        self.binary_files: list[Path] = []
        """Files left out because they are not text (a NUL byte near the start: see data.textio)."""
        for path in resolve_corpus_paths(paths):
            (self.files if sniff_text_file(path) == "text" else self.binary_files).append(path)
        if not self.files:
            raise ValueError(f"the corpus holds no text file: {len(self.binary_files)} binary file(s), e.g. "
                             f"{self.binary_files[0]}; give UTF-8 text files, one sentence per line")
        self.sizes: list[int] = [f.stat().st_size for f in self.files]
        self._bases: list[int] = []  # global offset of each file's first byte
        total = 0
        for size in self.sizes:
            self._bases.append(total)
            total += size
        self.total_bytes: int = total
        self.max_line_bytes = max_line_bytes
        self.tokenizer_name = tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "__name__", "custom")
        self._tokenize = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer

    def __repr__(self) -> str:
        return (
            f"Corpus({len(self.files)} files, {self.total_bytes} bytes, "
            f"tokenizer={self.tokenizer_name!r}, max_line_bytes={self.max_line_bytes})"
        )

    def locate(self, offset: int) -> tuple[Path, int]:
        """(file, local offset) of global byte ``offset`` (0 <= offset < total_bytes)."""
        for path, size, base in zip(self.files, self.sizes, self._bases):
            if base <= offset < base + size:
                return path, offset - base
        raise ValueError(f"offset {offset} is outside the corpus ({self.total_bytes} bytes)")

    def inside_long_line(self, offset: int) -> bool:
        """Whether global byte ``offset`` lies in a line over ``max_line_bytes`` (one that is
        skipped but still owns its bytes); reads at most 2 x (``max_line_bytes`` + 2) bytes."""
        path, local = self.locate(offset)
        limit = self.max_line_bytes + 2  # the content plus "\r\n"
        with open(path, "rb") as f:
            back = min(local, limit)
            f.seek(local - back)
            newline = f.read(back).rfind(b"\n")
            if newline < 0 and local >= limit:
                return True  # the line began more than `limit` bytes before the offset
            line_start = local - back + newline + 1 if newline >= 0 else 0
            f.seek(line_start)
            head = f.read(limit)
        return len(head) == limit and b"\n" not in head

    def iter_sentences(self, report: SkipReport | None = None) -> Iterator[list[str]]:
        """Every kept line of every file, in order, as a token list."""
        for _, tokens in self.iter_lines_between(0, self.total_bytes, report):
            yield tokens

    def iter_sentences_between(self, start: int, end: int, report: SkipReport | None = None) -> Iterator[list[str]]:
        """The kept lines that start at a global byte offset in ``[start, end)``."""
        for _, tokens in self.iter_lines_between(start, end, report):
            yield tokens

    def iter_lines_between(
        self, start: int, end: int, report: SkipReport | None = None
    ) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(offset_after_line, tokens)`` for each kept line starting in ``[start, end)``.

        ``offset_after_line`` is the global offset of the first byte after the line (its
        terminator included): restarting with ``start=offset_after_line`` continues exactly
        with the next line. A line that starts before ``start`` belongs to the previous region
        even if it runs past ``start``; a line that starts before ``end`` is read whole.
        Empty files are counted by the region holding their offset (the last region, whose
        ``end`` is ``total_bytes``, also takes those at the very end).
        """
        if start < 0 or end < start:
            raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
        if report is None:
            report = SkipReport()
        if start == 0:  # left out of the byte stream; counted once, by the region at offset 0
            report.binary_files += len(self.binary_files)
        for path, size, base in zip(self.files, self.sizes, self._bases):
            if size == 0:
                if start <= base and (base < end or end >= self.total_bytes):
                    report.empty_files += 1
                continue
            if base + size <= start:
                continue
            if base >= end:
                break
            yield from self._lines_of_file(path, base, max(start - base, 0), min(end - base, size), report)

    def _lines_of_file(
        self, path: Path, base: int, lo: int, hi: int, report: SkipReport
    ) -> Iterator[tuple[int, list[str]]]:
        """Kept lines of one file that start at a local offset in ``[lo, hi)``."""
        limit = self.max_line_bytes + 2  # room for the content plus "\r\n"
        tokenize = self._tokenize
        with open(path, "rb") as f:
            pos = lo
            if lo > 0:
                f.seek(lo - 1)
                if f.read(1) != b"\n":
                    pos += _skip_rest_of_line(f)  # that line started in the previous region
            while pos < hi:
                line_start = pos
                raw = f.readline(limit)
                if not raw:
                    break
                pos += len(raw)
                if len(raw) == limit and not raw.endswith(b"\n"):
                    # Longer than any line we keep: step over the rest without holding it.
                    pos += _skip_rest_of_line(f)
                    report.too_long += 1
                    continue
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if len(raw) > self.max_line_bytes:
                    report.too_long += 1
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    report.invalid_utf8 += 1
                    continue
                if line_start == 0 and text.startswith("\ufeff"):
                    text = text[1:]  # a UTF-8 byte-order mark is not part of the first word
                tokens = tokenize(text)
                if not tokens:
                    report.blank += 1
                    continue
                report.lines_read += 1
                report.tokens_read += len(tokens)
                yield base + pos, tokens


def _skip_rest_of_line(f) -> int:
    """Read ``f`` up to and including the next b"\\n" in bounded chunks; return bytes read."""
    skipped = 0
    while True:
        chunk = f.readline(_SKIP_CHUNK_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped
