"""Bounded failure in multi-process training: no rank waits forever for another.

Two mechanisms, one bound (``comm_timeout_s``, ``--comm-timeout``):

* the process group is created with that timeout, so a collective that a peer never joins
  raises on the waiting ranks (a peer that *died* closes its sockets, and gloo/NCCL raise at
  once; one that *hangs* keeps them open, and the timeout is what ends the wait);
* a :class:`Watchdog` thread on every rank of a multi-rank job ends its own process when the
  training loop has not advanced for that long. It covers what the timeout cannot: a rank
  stuck outside any collective (I/O on a dead filesystem, a deadlock, a lock file left by a
  killed process while DeepSpeed loads its comm op), which is the rank that would otherwise
  never exit. It exits with ``os._exit`` because the main thread may be blocked in C++ where
  no exception can reach it.

Either way the process exits non-zero; the launcher on its node (deepspeed, torchrun) then
stops the node's other ranks, and ranks on other nodes see closed connections and exit too.
Nothing is written on the way out, so the run directory holds the last complete checkpoint
and ``--resume`` loses at most the steps since it.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from elmo_dist.errors import UsageError

DEFAULT_COMM_TIMEOUT_S = 600.0
"""The DeepSpeed/torch default process-group timeout (10 minutes)."""

EXIT_STALLED = 75
"""Exit status of a rank ended by its watchdog (EX_TEMPFAIL: rerun with --resume)."""


class RankFailure(UsageError, RuntimeError):
    """A collective failed or timed out: another rank died or hung (the message says what to do)."""


def describe_collective_error(e: BaseException, rank: int, step: int, last_checkpoint: Optional[int]) -> str:
    """One line for a failed collective: what happened, where, and how to continue."""
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    resume = (f"rerun with --resume to continue from the checkpoint at step {last_checkpoint}"
              if last_checkpoint is not None else "no checkpoint was written yet; start the run again")
    return (f"rank {rank}: lost contact with the other ranks at step {step} ({detail}); another rank died or "
            f"hung, so the job stops; {resume}")


def stale_lock_files(max_age_s: float = 60.0) -> list[Path]:
    """Old ``lock`` files of torch C++ extensions (DeepSpeed builds its CPU comm op there).

    A process killed while holding one leaves it behind, and every later DeepSpeed start on
    the machine waits for it forever; naming it turns that hang into a one-line fix.
    """
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    if not root.is_dir():
        return []
    now = time.time()
    found = []
    for lock in root.glob("*/*/lock"):
        try:
            if now - lock.stat().st_mtime > max_age_s:
                found.append(lock)
        except OSError:
            pass
    return found


class Watchdog:
    """Ends this process if :meth:`beat` is not called for ``timeout_s`` seconds.

    ``beat(what)`` marks progress and names the phase now running ("training step 12",
    "writing checkpoint at step 500"); the message on a stall names the last one. ``pause``
    stops the clock for phases bounded otherwise (an evaluation pass, whose only collective
    carries the process-group timeout). ``on_stall(message)`` replaces the default
    print-stacks-and-``os._exit(EXIT_STALLED)`` (tests use it). ``enabled=False`` makes every
    call a no-op (a single process has no peer to wait for, and a slow step is not a hang).
    """

    def __init__(self, timeout_s: float, rank: int = 0, on_stall: Optional[Callable[[str], None]] = None,
                 poll_s: Optional[float] = None, enabled: bool = True):
        if timeout_s <= 0:
            raise ValueError(f"the watchdog timeout must be > 0 seconds; got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.rank = rank
        self._on_stall = on_stall or self._exit
        self._poll_s = poll_s if poll_s is not None else min(5.0, self.timeout_s / 10)
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._what = "starting"
        self._paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elmo-dist-watchdog", daemon=True)
        if enabled:
            self._thread.start()

    def beat(self, what: str) -> None:
        with self._lock:
            self._last, self._what, self._paused = time.monotonic(), what, False

    def pause(self, what: str) -> None:
        with self._lock:
            self._what, self._paused = what, True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self._poll_s + 1)

    def __enter__(self) -> "Watchdog":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                idle = time.monotonic() - self._last
                what, paused = self._what, self._paused
            if not paused and idle > self.timeout_s:
                self._on_stall(self._message(what, idle))
                return

    def _message(self, what: str, idle: float) -> str:
        msg = (f"elmo-dist: rank {self.rank}: no progress for {idle:.0f} s (limit {self.timeout_s:.0f} s, "
               f"--comm-timeout) while {what}; another rank has probably died or hung. Ending this rank so "
               "that the job stops; rerun with --resume to continue from the last checkpoint")
        locks = stale_lock_files()
        if locks and what.startswith("initialising"):
            msg += (f". Stale extension lock file(s) {', '.join(map(str, locks))} make DeepSpeed wait forever "
                    "at start-up: delete them if no build is running")
        return msg

    def _exit(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        try:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except Exception:  # never let diagnostics stop the exit
            pass
        sys.stderr.flush()
        os._exit(EXIT_STALLED)


class StopSignals:
    """SIGTERM (and SIGINT, unless the shell ignores it) set a flag instead of killing the run.

    The training loop checks ``received`` at each step boundary and stops there with a complete
    checkpoint: a scheduler's SIGTERM (Slurm sends one before SIGKILL) or Ctrl-C loses no
    finished step. Handlers can only be installed from the main thread; elsewhere this is inert.
    """

    def __init__(self) -> None:
        import signal
        import threading
        self.received: Optional[str] = None
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is signal.SIG_IGN:  # background jobs ignore SIGINT: keep that
                continue
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        import signal
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        import signal
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class RunInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint and an "interrupted" summary.

    ``exit_code`` is 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shell's
    convention, so a scheduler can tell an interrupted run from a finished one (exit 0)."""

    def __init__(self, signal_name: str, step: int, run_dir: Path):
        import signal
        self.signal_name, self.step = signal_name, step
        self.exit_code = 128 + int(signal.Signals[signal_name])
        super().__init__(f"stopped by {signal_name} at step {step}: checkpoint written; continue with "
                         f"`elmo-dist pretrain --run-dir {run_dir} --resume auto`")
