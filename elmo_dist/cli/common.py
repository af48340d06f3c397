"""Shared CLI plumbing: one-line errors instead of tracebacks for bad input, thread setup."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from elmo_dist.errors import USER_ERRORS  # one line + exit 2; anything else (a bug) keeps its traceback
from elmo_dist.utils import WriteFailed


def one_line(e: BaseException) -> str:
    """The first line of an error's message; an OSError without one as "path: reason"."""
    text = str(e).strip()
    if isinstance(e, OSError) and e.filename and e.strerror and not isinstance(e, WriteFailed):
        text = f"{e.filename}: {e.strerror}"
    return text.splitlines()[0] if text else type(e).__name__


def run_guarded(prog: str, fn: Callable[[], int]) -> int:
    """Runs ``fn``; user errors become ``prog: error: message`` on stderr and exit status 2."""
    from elmo_dist.train.faults import RunInterrupted
    try:
        return fn()
    except RunInterrupted as e:  # a checkpoint and an "interrupted" summary were written
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as e:
        if os.environ.get("ELMO_DIST_DEBUG"):
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default and keeps the description's line breaks."""


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for this process (default: torch's choice; with several ranks on "
                        "one CPU box use cores / ranks)")


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        import torch
        torch.set_num_threads(threads)
