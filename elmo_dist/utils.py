"""Small helpers shared across the package: atomic file writes and write failures in one line,
the default device."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it over ``path`` only if the block succeeds.

    A crash mid-write leaves the old file (or none) in place, never a half-written one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a read-only or full disk, a missing permission: say so before any work
        raise write_failure(path, e) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


class WriteFailed(OSError):
    """A file could not be written (no space, read-only, permission): the message names the path
    and the cause in one line; what was half-written has been removed."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "write failed"


_WRITE_CAUSES = {  # errno -> what it means for the user, and what to do
    errno.ENOSPC: "no space left on the device (free some, or write elsewhere)",
    errno.EDQUOT: "the disk quota is exceeded (free some space, or write elsewhere)",
    errno.EROFS: "the file system is read-only (write to another folder)",
    errno.EACCES: "permission denied (fix the folder's permissions, or write elsewhere)",
    errno.EPERM: "permission denied (fix the folder's permissions, or write elsewhere)",
    errno.EFBIG: "the file is over this process's file-size limit (raise `ulimit -f`)",
    errno.EISDIR: "it is a folder (give a file path)",
    errno.ENOTDIR: "a part of the path is a file, not a folder"}


def write_failure(path: Path | str, error: BaseException) -> WriteFailed:
    """A :class:`WriteFailed` for ``error`` raised while writing ``path``. torch's zip writer
    reports a full disk as ``RuntimeError: ... unexpected pos``: the OSError it hides is its
    ``__context__``; failing that, the free space of the path's file system decides."""
    errors = (error, error.__context__, error.__cause__)
    cause = next((_WRITE_CAUSES[e.errno] for e in errors if isinstance(e, OSError) and e.errno in _WRITE_CAUSES), None)
    if cause is None:
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        try:
            if shutil.disk_usage(_existing_parent(Path(path))).free < (1 << 20):
                cause = _WRITE_CAUSES[errno.ENOSPC]
        except OSError:
            pass
    return WriteFailed(f"cannot write {path}: {cause}")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(path: Path | str, flag: str) -> None:
    """Creates folder ``path`` if needed and proves it takes a file (written, then removed);
    :class:`WriteFailed` naming ``flag`` otherwise, before any work depends on it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteFailed(f"{flag} {path} is a file; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise WriteFailed(f"{flag} {path}: cannot write there: {_WRITE_CAUSES.get(e.errno, e.strerror)}") from None


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically, flushed to disk before the rename."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise write_failure(path, e) from e


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, payload, sort_keys: bool = True) -> None:
    """``payload`` as indented JSON (sorted keys unless told otherwise), written atomically."""
    import json
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")


def pick_device(device: Optional[str] = None):
    """``device`` as given (cpu, cuda[:k]); None: this process's GPU when there is one (cuda:k
    with k = $LOCAL_RANK, 0 outside a launcher), else cpu. The one device default of the package.

    A device this machine lacks is a ``ValueError`` naming ``--device`` (torch would fail later,
    deep inside, with an AssertionError)."""
    import torch
    if not device:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:K") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device {device}: this machine has no usable CUDA device (torch {torch.__version__}, "
                             f"{build}); use --device cpu")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"--device {device}: there are {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: elmo-dist runs on cpu or cuda[:k]")
    return chosen
