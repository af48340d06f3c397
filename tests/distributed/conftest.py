"""Multi-process tests: build DeepSpeed's CPU shared-memory comm op once, before any test runs.

On a fresh machine the first DeepSpeed start compiles that op into ~/.cache/torch_extensions
while holding a file lock (~25 s on an idle 2-core machine, over 3 minutes on a loaded one).
If that happened inside a multi-process test, one rank would compile while its peers wait on
the lock, and the test's own bounds (collective timeouts, the watchdog, subprocess timeouts)
would measure the compiler, not the code under test.

The build runs in `pytest_collection_finish`, after collection and before the first test, so
no per-test pytest-timeout covers it: as a session fixture it ran inside the first test's
setup, and CI's compile outlasted that test's 60 s bound, erroring all 27 tests here.
It runs only when a test from this directory was selected.
"""
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _selects_a_test_here(session) -> bool:
    return any(HERE in item.path.resolve().parents for item in session.items)


def pytest_collection_finish(session):
    if session.config.option.collectonly or not _selects_a_test_here(session):
        return
    from deepspeed.accelerator import get_accelerator
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not builder.is_compatible():
        return
    say = _say(session)
    started = time.monotonic()
    say("tests/distributed: loading DeepSpeed's shm comm op (compiled once per machine)")
    builder.load()
    say(f"tests/distributed: shm comm op ready in {time.monotonic() - started:.0f} s")


def _say(session):
    """A line on pytest's terminal, outside output capture."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: reporter.write_line(line)
