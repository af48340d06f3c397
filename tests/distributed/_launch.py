"""Helpers for multi-process tests: a corpus, free ports, processes that are always reaped.

Every launch runs under a deadline; whatever is still alive at the end of a test is killed by
process group, so no test leaves ranks behind (a missing rank makes the others wait).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from tests.corpus import write_corpus  # noqa: F401  (re-exported to the distributed tests)

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
                 "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher variables, one thread per rank (2 cores)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    env.update(extra)
    return env


class Procs:
    """Processes started for one test; ``reap()`` kills every process group still alive."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Optional[Path] = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, env=env, cwd=cwd or REPO, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def wait_all(self, timeout_s: float) -> dict[str, int]:
        """Return codes by name; on timeout kills everything and fails with the logs' tails."""
        deadline = time.monotonic() + timeout_s
        for name, p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.reap()
                tails = "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n, _ in self.procs)
                raise AssertionError(f"launch did not finish within {timeout_s:.0f} s\n{tails}") from None
        return {name: p.returncode for name, p in self.procs}

    def reap(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _, p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def pretrain_args(run_dir: Path, train: Path, valid: Path, **flags) -> list[str]:
    """`elmo-dist pretrain` flags for a tiny, dropout-free run (so ranks are comparable exactly)."""
    args = ["--run-dir", str(run_dir), "--corpus", str(train), "--valid", str(valid), "--preset", "tiny",
            "--dropout", "0", "--batch-size", "4", "--num-steps", "6", "--log-every", "1", "--eval-every", "0",
            "--wandb", "disabled", "--no-progress"]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def torchrun(procs: Procs, name: str, nproc: int, args: list[str], launcher: tuple = ()) -> subprocess.Popen:
    """``torchrun`` (``launcher``: its own extra flags, e.g. --max-restarts) running pretrain."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), *launcher, "-m", "elmo_dist", "pretrain", *args]
    return procs.start(name, cmd, clean_env())


def worker_pid(agent_pid: int, rank: int) -> Optional[int]:
    """The pid of the worker with RANK=``rank`` among the children of a torchrun agent, if running."""
    try:
        children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def bare_ranks(procs: Procs, name: str, world: int, args: list[str], **env) -> list[subprocess.Popen]:
    """``world`` ranks with launcher variables set by hand and no launcher watching them, so
    that a test sees what the ranks themselves do when a peer fails."""
    port = str(free_port())
    out = []
    for rank in range(world):
        e = clean_env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, **env)
        out.append(procs.start(f"{name}-rank{rank}", [sys.executable, "-m", "elmo_dist", "pretrain", *args], e))
    return out


def deepspeed_node(procs: Procs, name: str, hostfile: Path, node_rank: int, num_nodes: int, port: int,
                   args: list[str]) -> subprocess.Popen:
    """One node's launcher of a multi-node job without ssh (`deepspeed --no_ssh`)."""
    ds = Path(sys.executable).with_name("deepspeed")
    cmd = [sys.executable, str(ds), "--hostfile", str(hostfile), "--no_ssh", "--num_nodes", str(num_nodes),
           "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
           "--module", "elmo_dist.cli.pretrain", *args]
    return procs.start(name, cmd, clean_env())
