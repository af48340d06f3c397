"""Data-parallel pretraining in several processes on CPU/gloo, launched the ways users launch it.

One uninterrupted 2-rank run (torchrun, ZeRO 0) is the reference for everything else:
* its parameters equal those of one process that feeds both ranks' batches through the same
  objective (mean over ranks of each rank's mean loss, which is what DeepSpeed's gradient
  averaging optimises);
* a 2-rank run whose rank 1 is killed ends within the bound, and resuming it, on two
  `deepspeed --no_ssh` launchers simulating two nodes and with ZeRO 2, ends with the same loss
  and parameters;
* resuming it on one rank re-splits the rows, keeps the global batch, and trains on.
Dropout is 0 so that ranks are comparable exactly. Every launch runs under a deadline and every
process is killed at the end of its test.
"""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from elmo_dist.data import Vocabulary, WindowBatcher
from elmo_dist.model import BiLM
from elmo_dist.train import RunConfig, pretrain
from elmo_dist.train.checkpoint import list_checkpoints
from elmo_dist.train.distributed import build_optimizer
from elmo_dist.metrics import read_metrics
from elmo_dist.train.rundir import make_corpus

from ._launch import (REPO, Procs, bare_ranks, deepspeed_node, free_port, pretrain_args, torchrun, worker_pid,
                      write_corpus)

pytestmark = pytest.mark.timeout(400)

STEPS, EVERY = 16, 4
LAUNCH_S = 240  # deadline for one launch on a busy 2-core machine (a launch takes ~20 s alone)
COMM_TIMEOUT_S = 60  # --comm-timeout of the fault tests: the bound on ending the job (generous: start-up on a loaded 2-core box)


@pytest.fixture
def one_thread():
    """In-process work shares 2 cores with the launched ranks: one torch thread (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return write_corpus(d / "train.txt", 300), write_corpus(d / "valid.txt", 40, seed=1)


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """Two ranks under torchrun, ZeRO 0, STEPS steps, a checkpoint every EVERY."""
    root = tmp_path_factory.mktemp("reference")
    procs = Procs(root / "logs")
    try:
        torchrun(procs, "torchrun", 2, pretrain_args(root / "run", *data, max_steps=STEPS, checkpoint_every=EVERY))
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    assert codes == {"torchrun": 0}, procs.log("torchrun")[-3000:]
    return root / "run"


def final_state(run_dir: Path) -> dict:
    return torch.load(list_checkpoints(run_dir)[-1] / "state.pt", map_location="cpu", weights_only=True)


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


def assert_params_close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m} (worst {worst})")


def test_two_ranks_equal_one_process_fed_both_ranks_batches(reference_run, one_thread):
    cfg = RunConfig.load(reference_run / "config.json")
    vocab = Vocabulary.from_file(reference_run / "vocab.txt")
    tc = cfg.train
    corpus = make_corpus(cfg.data.train, cfg.data)
    # Rank k's rows, exactly as the 2-rank run split them.
    rows = [iter(WindowBatcher(corpus, vocab, tc.batch_size, tc.num_steps, row_start=k * tc.batch_size,
                               total_rows=2 * tc.batch_size)) for k in range(2)]
    torch.manual_seed(tc.seed)
    model = BiLM(cfg.model)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    states = [None, None]
    for _ in range(STEPS):
        optimizer.zero_grad()
        total = 0.0
        for k in range(2):
            batch = next(rows[k])
            out, new_state = model.lm_loss(batch.char_ids, batch.fwd_targets, batch.bwd_targets, states[k])
            (0.5 * out.loss).backward()  # the mean over ranks of each rank's mean loss
            states[k] = new_state.detach()
            total += 0.5 * out.loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
    saved = final_state(reference_run)
    assert saved["step"] == STEPS
    assert_params_close(saved["model"], model.state_dict(), rtol=1e-5, atol=1e-6)  # measured: bitwise equal
    # Every rank's data position and carried state are in the checkpoint.
    ckpt = list_checkpoints(reference_run)[-1]
    assert sorted(p.name for p in ckpt.glob("data_rank*.json")) == ["data_rank0.json", "data_rank1.json"]
    for k in range(2):
        assert saved[f"lstm_state_rank{k}"]["fwd_h"].shape[1] == tc.batch_size


def test_resume_two_ranks_on_one_keeps_global_batch(reference_run, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    with pytest.warns(UserWarning, match="re-split"):
        summary = pretrain(None, run, resume=True, progress=False, overrides={"max_steps": STEPS + 2})
    assert summary["step"] == STEPS + 2 and summary["world_size"] == 1
    meta = json.loads((list_checkpoints(run)[-1] / "meta.json").read_text())
    assert meta["world_size"] == 1 and meta["grad_accum_steps"] == 2  # 4 rows x 1 x 2 ranks = 4 rows x 2 x 1 rank
    new = losses(run)
    assert set(new) == set(range(1, STEPS + 3)) and abs(new[STEPS + 2] - new[STEPS]) < 0.5
    resumed = json.loads((list_checkpoints(run)[-1] / "data_rank0.json").read_text())
    assert resumed["total_rows"] == 4 and len(resumed["rows"]) == 4  # (test_faults_and_config: where they start)


def test_killed_rank_ends_job_in_bound_and_resume_on_two_nodes_matches(reference_run, data, tmp_path):
    run = tmp_path / "run"
    procs = Procs(tmp_path / "logs")
    try:
        # Ranks without a launcher: the survivor must end by itself, nobody kills it for us.
        ranks = bare_ranks(procs, "job", 2, pretrain_args(run, *data, max_steps=STEPS, checkpoint_every=EVERY,
                                                          comm_timeout=COMM_TIMEOUT_S))
        first = run / "checkpoints" / f"step-{EVERY:08d}" / "meta.json"
        deadline = time.monotonic() + LAUNCH_S
        while not first.exists():
            assert time.monotonic() < deadline and ranks[0].poll() is None, procs.log("job-rank0")[-3000:]
            time.sleep(0.02)
        os.kill(ranks[1].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            ranks[0].wait(timeout=COMM_TIMEOUT_S + 30)
        except Exception:
            pytest.fail(f"rank 0 still running {COMM_TIMEOUT_S + 30} s after rank 1 was killed")
        ended_after = time.monotonic() - killed_at
    finally:
        procs.reap()
    log = procs.log("job-rank0")
    assert ranks[0].returncode != 0 and ended_after < COMM_TIMEOUT_S + 30
    assert "lost contact with the other ranks" in log or "no progress for" in log, log[-2000:]
    done = [int(p.name.split("-")[1]) for p in list_checkpoints(run)]
    assert EVERY in done and STEPS not in done  # it stopped mid-run, after a checkpoint

    # Two "nodes" on loopback, one `deepspeed --no_ssh` launcher each, now with ZeRO 2.
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = free_port()
    args = ["--run-dir", str(run), "--resume", "--max-steps", str(STEPS), "--no-progress",
            "--deepspeed-config", str(REPO / "launch" / "ds_zero2_fp32.json")]
    procs = Procs(tmp_path / "logs2")
    try:
        for node in range(2):
            deepspeed_node(procs, f"node{node}", hostfile, node, 2, port, args)
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    assert codes == {"node0": 0, "node1": 0}, procs.log("node0")[-3000:] + procs.log("node1")[-3000:]
    assert f"resumed from {run / 'checkpoints'}" in procs.log("node0")
    last = list_checkpoints(run)[-1]
    meta = json.loads((last / "meta.json").read_text())
    assert meta["step"] == STEPS and meta["world_size"] == 2 and meta["zero_stage"] == 2
    assert sorted(p.name for p in last.glob("data_rank*.json")) == ["data_rank0.json", "data_rank1.json"]
    # Same final loss and parameters as the uninterrupted run (ZeRO 2 only reorders float sums).
    assert losses(run)[STEPS] == pytest.approx(losses(reference_run)[STEPS], rel=1e-5)
    resumed, reference = final_state(run), final_state(reference_run)
    assert_params_close(resumed["model"], reference["model"], rtol=1e-4, atol=1e-5)
    for name, st in reference["optimizer"]["state"].items():  # gathered from the ZeRO 2 partitions
        torch.testing.assert_close(resumed["optimizer"]["state"][name]["sum"], st["sum"], rtol=1e-4, atol=1e-5)


def test_torchrun_max_restarts_finishes_a_killed_run_by_itself(reference_run, data, tmp_path):
    """torchrun --max-restarts 2 with --resume auto: rank 1 is killed after the first checkpoint;
    the agent restarts both ranks, they continue from the newest checkpoint, and the job ends
    (exit 0) with the uninterrupted run's final loss and parameters. Nobody types --resume."""
    run = tmp_path / "run"
    procs = Procs(tmp_path / "logs")
    try:
        agent = torchrun(procs, "torchrun", 2, pretrain_args(run, *data, max_steps=STEPS, checkpoint_every=EVERY,
                                                             resume="auto", comm_timeout=COMM_TIMEOUT_S),
                         launcher=("--max-restarts", "2", "--monitor-interval", "0.5"))
        first = run / "checkpoints" / f"step-{EVERY:08d}" / "meta.json"
        deadline = time.monotonic() + LAUNCH_S
        while not first.exists():
            assert time.monotonic() < deadline and agent.poll() is None, procs.log("torchrun")[-3000:]
            time.sleep(0.02)
        victim = worker_pid(agent.pid, 1)
        assert victim is not None, procs.log("torchrun")[-3000:]
        os.kill(victim, signal.SIGKILL)
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    log = procs.log("torchrun")
    assert codes == {"torchrun": 0}, log[-4000:]
    assert f"resumed from {run / 'checkpoints'}" in log, log[-4000:]  # the restart continued the run
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert losses(run)[STEPS] == pytest.approx(losses(reference_run)[STEPS], rel=1e-5)
    assert_params_close(final_state(run)["model"], final_state(reference_run)["model"], rtol=1e-4, atol=1e-5)


def test_epochs_on_two_ranks_train_every_target_exactly_twice(data, tmp_path):
    run = tmp_path / "run"
    procs = Procs(tmp_path / "logs")
    try:
        torchrun(procs, "torchrun", 2, pretrain_args(run, *data, epochs=2, checkpoint_every=0))
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    assert codes == {"torchrun": 0}, procs.log("torchrun")[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    lines = [line.split() for line in data[0].read_text().splitlines() if line.split()]
    want = 2 * sum(len(words) + 1 for words in lines)  # per direction, counted from the text
    assert summary["stop_reason"] == "epochs" and summary["world_size"] == 2
    assert summary["targets_trained"] == {"fwd": want, "bwd": want}


@pytest.fixture(scope="module")
def adam_run(data, tmp_path_factory):
    """Two ranks, ZeRO 1, Adam (whose state DeepSpeed creates only at the first step), 4 steps."""
    root = tmp_path_factory.mktemp("adam")
    procs = Procs(root / "logs")
    try:
        torchrun(procs, "torchrun", 2, pretrain_args(root / "run", *data, optimizer="adam", lr="0.01", max_steps=4,
                                                     checkpoint_every=4, deepspeed_config=REPO / "launch" /
                                                     "ds_zero1_fp32.json"))
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    assert codes == {"torchrun": 0}, procs.log("torchrun")[-3000:]
    return root / "run"


@pytest.mark.parametrize("stage,ranks", [(0, 1), (2, 2), (2, 1)])
def test_optimizer_state_moves_between_zero_stages_and_world_sizes(adam_run, tmp_path, stage, ranks):
    """A ZeRO 1 / 2-rank Adam checkpoint resumed under another stage and rank count, with no step
    left to train: the state it gathers again (through DeepSpeed's public API) is the saved one,
    and the weights did not move (the restore's zero-learning-rate step leaves them be)."""
    run = tmp_path / "run"
    shutil.copytree(adam_run, run)
    procs = Procs(tmp_path / "logs")
    try:
        torchrun(procs, "torchrun", ranks, ["--run-dir", str(run), "--resume", "--max-steps", "4", "--no-progress",
                                            "--deepspeed-config", str(REPO / "launch" / f"ds_zero{stage}_fp32.json")])
        codes = procs.wait_all(LAUNCH_S)
    finally:
        procs.reap()
    assert codes == {"torchrun": 0}, procs.log("torchrun")[-3000:]
    before, after = final_state(adam_run), final_state(run)
    assert json.loads((list_checkpoints(run)[-1] / "meta.json").read_text())["zero_stage"] == stage
    for name, tensor in before["model"].items():
        assert torch.equal(after["model"][name], tensor), name
    saved, again = before["optimizer"]["state"], after["optimizer"]["state"]
    assert saved.keys() == again.keys() and len(saved) == len(before["model"])
    for name, entry in saved.items():
        assert set(entry) == set(again[name]) >= {"exp_avg", "exp_avg_sq", "step"}, name
        for key, value in entry.items():
            assert torch.equal(again[name][key].float(), value.float()), (name, key)


def test_hung_rank_ends_job_in_bound(data, tmp_path):
    """A rank that stops (SIGSTOP: alive, sockets open, silent) is the case only timeouts catch."""
    run = tmp_path / "run"
    procs = Procs(tmp_path / "logs")
    try:
        ranks = bare_ranks(procs, "job", 2, pretrain_args(run, *data, max_steps=1000, checkpoint_every=2,
                                                          comm_timeout=COMM_TIMEOUT_S))
        first = run / "checkpoints" / "step-00000002" / "meta.json"
        deadline = time.monotonic() + LAUNCH_S
        while not first.exists():
            assert time.monotonic() < deadline and ranks[0].poll() is None, procs.log("job-rank0")[-3000:]
            time.sleep(0.05)
        os.kill(ranks[1].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            ranks[0].wait(timeout=COMM_TIMEOUT_S + 30)
        except Exception:
            pytest.fail(f"rank 0 still running {COMM_TIMEOUT_S + 30} s after rank 1 hung; its log ends:\n"
                        + procs.log("job-rank0")[-2000:])
        ended_after = time.monotonic() - stopped_at
    finally:
        procs.reap()
    log = procs.log("job-rank0")
    assert ranks[0].returncode != 0, log[-2000:]
    assert COMM_TIMEOUT_S * 0.5 < ended_after < COMM_TIMEOUT_S + 30, (ended_after, log[-2000:])  # measured: ~63 s
    assert "lost contact with the other ranks" in log or "no progress for" in log, log[-2000:]
    assert "--resume" in log
