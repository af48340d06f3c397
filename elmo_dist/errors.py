"""Errors that are the user's to fix, told apart from bugs.

The CLI prints an error of these kinds as one line and exits 2; anything else (a bug) keeps its
traceback. ``ValueError`` (bad options and input) and ``OSError`` (files and disks, see
``utils.WriteFailed``) are such errors by nature; the classes here mark the others: a missing
package, a damaged checkpoint, a lost peer rank, an environment set up wrongly.
"""
from __future__ import annotations


class UsageError(Exception):
    """Mixin: the message says what the user should do; no traceback helps them."""


class MissingPackage(UsageError, ImportError):
    """An optional package is not installed; the message gives the pip command."""


class EnvironmentProblem(UsageError, RuntimeError):
    """The process was started in a way that cannot work (launcher variables, a device)."""


USER_ERRORS = (ValueError, OSError, FloatingPointError, UsageError)
"""What ``cli.common.run_guarded`` turns into one line and exit status 2."""
