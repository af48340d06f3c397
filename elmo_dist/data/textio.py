"""What every text reader of the package agrees on: where lines break, which files are text.

* **Lines end at ``\\n`` only.** A ``\\r`` right before it is part of the terminator (Windows
  files); any other ``\\r``, and the other Unicode line separators Python's ``splitlines`` and
  universal-newline mode break at (``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``,
  ``\\u2028``, ``\\u2029``), stay inside the line, where the tokenizers treat them as
  whitespace. So the corpus reader, ``export``'s line numbers (its HDF5 keys), ``vocab`` and the
  classifier's tables count the same lines in the same file.
* **UTF-8 only.** A file that starts with a UTF-16 or UTF-32 byte-order mark (and holds the NUL
  bytes such text always has) is refused with the
  ``iconv`` command that converts it: read as UTF-8 it would put NUL bytes inside every word.
* **Text, not binary.** A NUL byte in a file's first :data:`SNIFF_BYTES` marks it binary (an
  image, an archive, UTF-16 without a mark); readers of many files skip and count such files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

SNIFF_BYTES = 8192
"""How much of a file :func:`sniff_text_file` reads: enough to catch a binary header."""

# Longest marks first: the UTF-32-LE mark begins with the UTF-16-LE one.
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
              (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))


class EncodingError(ValueError):
    """A text file in an encoding the package does not read (the message says how to convert it)."""


def wide_encoding(head: bytes) -> str | None:
    """The UTF-16/32 encoding named by the byte-order mark at the start of ``head``, else None.

    A mark counts only with a NUL byte after it: every line break (and ASCII letter) of UTF-16
    or UTF-32 text holds one, while a UTF-8 file whose first line merely starts with the bytes
    FF FE (invalid UTF-8: that line is skipped and counted) has none."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name if b"\x00" in head[len(bom):SNIFF_BYTES] else None
    return None


def sniff_text_file(path: str | os.PathLike) -> str:
    """``"text"`` or ``"binary"`` for the file at ``path``; raises :class:`EncodingError` for a
    UTF-16/32 byte-order mark, naming the file and the ``iconv`` command that converts it."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    encoding = wide_encoding(head)
    if encoding is not None:
        raise EncodingError(
            f"{path} is {encoding} text (it starts with a {encoding} byte-order mark); elmo-dist reads UTF-8: "
            f"convert it with `iconv -f {encoding[:6]} -t UTF-8 {path} > {Path(path).stem}.utf8{Path(path).suffix}`")
    return "binary" if b"\x00" in head else "text"


def split_lines(text: str) -> list[str]:
    """``text`` cut at ``\\n`` only, one trailing ``\\r`` per line removed; no empty last line for
    a final ``\\n`` (so ``"a\\nb\\n"`` and ``"a\\nb"`` both give two lines)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def iter_lines(path: str | os.PathLike, errors: str = "replace") -> Iterator[str]:
    """The lines of a UTF-8 file (see :func:`split_lines`), streamed; a UTF-8 byte-order mark
    at the start is dropped; ``errors`` as in :meth:`bytes.decode`."""
    with open(path, "rb") as f:
        first = True
        for raw in f:  # binary iteration splits at b"\n" only
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if first and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            first = False
            yield raw.decode("utf-8", errors=errors)
