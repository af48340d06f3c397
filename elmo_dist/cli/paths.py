"""Output paths checked before any work starts: never a folder, never one of the inputs.

Every subcommand that writes a file calls :func:`check_output_file` on it first, with the files
it reads. An output that *is* an input (the same path, a symlink or a hard link to it) would be
replaced by the atomic rename at the end and the input lost, after minutes of work; a folder
would fail only then, with a bare ``Errno 21``. Both are refused up front in one line naming
the flag.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from elmo_dist.utils import check_writable_dir


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: by inode when both exist (links), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output_file(path: Optional[Path], flag: str, inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Raises ``ValueError`` if ``path`` (given as ``flag``) is a folder, lies under a file, or
    is one of ``inputs`` ((what it is, path) pairs, e.g. ("the corpus", p)). None passes."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file path, e.g. {path / _example_name(flag)}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{flag} {path} exists and is not a regular file; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    for what, source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise ValueError(f"{flag} {path} is {what} it reads; writing there would destroy the input: "
                             "give another output path")
    check_writable_dir(path.parent, f"{flag} {path}: its folder")  # a read-only disk fails now, not at the end


def check_output_dir(path: Path, flag: str, inputs: Iterable[tuple[str, Path]] = ()) -> None:
    """Raises ``ValueError`` if the folder ``path`` is a file, or is or contains one of the
    ``inputs`` folders' contents in a way that writing would mix with them (it equals an input
    folder, or lies inside one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder path")
    for what, source in inputs:
        if source is None:
            continue
        source = Path(source)
        if same_file(path, source) or (source.is_dir() and _is_below(path, source)):
            raise ValueError(f"{flag} {path} is inside {what} {source}; its files would mix with the input: "
                             "give a folder outside it")


def _is_below(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _example_name(flag: str) -> str:
    return {"OUTPUT": "embeddings.hdf5", "--report": "report.json"}.get(flag, "out.txt")
