"""Shared CLI plumbing: one-line errors instead of tracebacks for bad input, thread setup."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

# Errors that mean "the input or options are wrong": printed as one line with the fix.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, ImportError, RuntimeError)


def run_guarded(prog: str, fn: Callable[[], int]) -> int:
    """Runs ``fn``; user errors become ``prog: error: message`` on stderr and exit status 2."""
    try:
        return fn()
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as e:
        if os.environ.get("ELMO_DIST_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
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
