"""Pretraining end to end on a tiny corpus: the CLI, exact resume, corrupt checkpoints, bad input.

Everything runs in-process on CPU through the same DeepSpeed engine as a real run (single
process, launcher variables set by elmo-dist itself).
"""
import json
import math

import pytest
import torch

from elmo_dist.cli import main as cli
from elmo_dist.train import pretrain
from elmo_dist.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from elmo_dist.metrics import read_metrics
from tests.corpus import micro_run_config, write_corpus

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "train.txt", 300), write_corpus(tmp_path / "valid.txt", 40, seed=1)


def train_losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}


def test_resume_reproduces_uninterrupted_run(tmp_path, corpus):
    cfg = micro_run_config(*corpus, max_steps=8)
    pretrain(cfg, tmp_path / "full", progress=False)
    half = micro_run_config(*corpus, max_steps=4)
    pretrain(half, tmp_path / "split", progress=False)
    pretrain(None, tmp_path / "split", resume=True, progress=False, overrides={"max_steps": 8})
    full, split = train_losses(tmp_path / "full"), train_losses(tmp_path / "split")
    assert sorted(full) == sorted(split) == list(range(1, 9))
    for step in full:
        assert split[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7), step
    a = torch.load(list_checkpoints(tmp_path / "full")[-1] / "state.pt", weights_only=True)["model"]
    b = torch.load(list_checkpoints(tmp_path / "split")[-1] / "state.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_training_lowers_held_out_perplexity(tmp_path, corpus):
    summary = pretrain(micro_run_config(*corpus, lr=2e-2, batch_size=8, max_steps=60, log_every=10,
                                        checkpoint_every=30),
                       tmp_path / "run", progress=False)
    untrained, trained = summary["untrained_valid"]["ppl_fwd"], summary["valid"]["ppl_fwd"]
    # ~35 words + specials: an untrained model is near uniform; the sentences are fixed, so a
    # trained one predicts most words from their context.
    assert untrained > 25 and trained < 0.5 * untrained
    run = tmp_path / "run"
    for name in ("config.json", "vocab.txt", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in list_checkpoints(run)] == ["step-00000030", "step-00000060"]


def test_keep_last_k(tmp_path, corpus):
    pretrain(micro_run_config(*corpus, max_steps=10, checkpoint_every=2, keep_checkpoints=2), tmp_path / "r",
             progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-00000008", "step-00000010"]


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, corpus):
    run = tmp_path / "r"
    pretrain(micro_run_config(*corpus, max_steps=8, checkpoint_every=4), run, progress=False)
    latest = list_checkpoints(run)[-1]
    data = (latest / "state.pt").read_bytes()
    (latest / "state.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="step-00000008"):
        summary = pretrain(None, run, resume=True, progress=False, overrides={"max_steps": 10})
    assert summary["step"] == 10
    assert min(train_losses(run)) == 1  # steps 5.. were retrained from the step-4 checkpoint


def flip_byte_in_tensor_data(state_file):
    """Flips one byte inside the largest tensor's stored data (the zip member archive/data/N):
    torch.load reads such a file without complaint."""
    import zipfile
    with zipfile.ZipFile(state_file) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(state_file.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2  # the middle of its data
    raw[at] ^= 0x40
    state_file.write_bytes(bytes(raw))


def test_flipped_byte_in_tensor_data_is_caught_and_the_previous_checkpoint_used(tmp_path, corpus):
    run = tmp_path / "r"
    pretrain(micro_run_config(*corpus, max_steps=8, checkpoint_every=4), run, progress=False)
    latest = list_checkpoints(run)[-1]
    def tensors():
        state = torch.load(latest / "state.pt", weights_only=True)
        found = []
        def walk(x):
            if isinstance(x, torch.Tensor):
                found.append(x)
            elif isinstance(x, dict):
                for v in x.values():
                    walk(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    walk(v)
        walk(state)
        return found
    before = tensors()
    flip_byte_in_tensor_data(latest / "state.pt")
    after = tensors()  # torch loads it without complaint...
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # ...but its values changed
    with pytest.raises(CheckpointError, match="state.pt is damaged"):
        load_checkpoint(latest)
    with pytest.warns(UserWarning, match="step-00000008.*damaged"):
        summary = pretrain(None, run, resume=True, progress=False, overrides={"max_steps": 10})
    assert summary["step"] == 10
    assert min(train_losses(run)) == 1 and set(train_losses(run)) == set(range(1, 11))  # 5.. retrained from 4


def test_cli_pretrain_evaluate_and_errors(tmp_path, corpus, capsys):
    train, valid = corpus
    run = tmp_path / "cli"
    code = cli(["pretrain", "--run-dir", str(run), "--corpus", str(train), "--valid", str(valid), "--preset", "tiny",
                "--batch-size", "4", "--num-steps", "5", "--max-steps", "3", "--eval-every", "0",
                "--wandb", "disabled", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "valid perplexity fwd" in out and "untrained" in out
    assert cli(["evaluate", str(run), "--corpus", str(valid), "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(result["ppl_fwd"]) and result["targets_fwd"] > 0
    # A second pretrain into the same run directory is refused with the fix in one line.
    assert cli(["pretrain", "--run-dir", str(run), "--corpus", str(train), "--no-progress", "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]
    assert cli(["evaluate", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "run directory" in capsys.readouterr().err
    assert cli(["pretrain", "--run-dir", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing*.txt"),
                "--no-progress", "--wandb", "disabled"]) == 2
    assert "missing" in capsys.readouterr().err
    assert cli(["pretrain", "--run-dir", str(tmp_path / "y"), "--preset", "huge", "--no-progress"]) == 2
    assert cli(["frobnicate"]) == 2


def test_bad_corpus_lines_are_reported_not_fatal(tmp_path, capsys):
    train = write_corpus(tmp_path / "train.txt", 200)
    with open(train, "ab") as f:
        f.write(b"caf\xe9 latin-1 line\r\n\r\n   \n" + b"x" * 3000 + b"\nthe cat sat\r\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    valid = write_corpus(tmp_path / "valid.txt", 30, seed=2)
    code = cli(["pretrain", "--run-dir", str(tmp_path / "r"), "--corpus", str(train), str(tmp_path / "empty.txt"),
                "--valid", str(valid), "--preset", "tiny", "--batch-size", "2", "--num-steps", "5", "--max-steps", "2",
                "--eval-every", "0", "--wandb", "disabled", "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "r" / "data_report.json").read_text())
    assert report["invalid_utf8"] == 1 and report["blank"] >= 2 and report["empty_files"] == 1
    assert "invalid UTF-8" in capsys.readouterr().out


def test_bf16_autocast_trains(tmp_path, corpus):
    summary = pretrain(micro_run_config(*corpus, precision="bf16", max_steps=3), tmp_path / "bf16", progress=False)
    assert summary["step"] == 3 and math.isfinite(summary["valid"]["ppl_fwd"])
    state = torch.load(list_checkpoints(tmp_path / "bf16")[-1] / "state.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())


def test_cli_vocab(tmp_path, corpus, capsys):
    train, _ = corpus
    out = tmp_path / "vocab.txt"
    assert cli(["vocab", str(train), "--out", str(out), "--min-count", "2", "--no-progress"]) == 0
    words = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert words[:3] == ["<S>", "</S>", "<UNK>"]
    counts = {}
    for line in train.read_text(encoding="utf-8").splitlines():
        for w in line.split():
            counts[w] = counts.get(w, 0) + 1
    expected = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
    assert words[3:] == expected
    assert cli(["vocab", str(tmp_path / "none.txt"), "--out", str(out)]) == 2


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, corpus):
    import os
    import subprocess
    import sys
    import time

    from elmo_dist.train.distributed import LAUNCHER_VARS
    train, valid = corpus
    run = tmp_path / "term"
    cmd = [sys.executable, "-m", "elmo_dist", "pretrain", "--run-dir", str(run), "--corpus", str(train),
           "--valid", str(valid), "--preset", "tiny", "--batch-size", "2", "--num-steps", "5", "--max-steps", "100000",
           "--eval-every", "0", "--checkpoint-every", "0", "--log-every", "1", "--wandb", "disabled", "--no-progress"]
    log = tmp_path / "pretrain.log"
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would block the child
        # In-process runs above set the launcher variables in this process (and hold its
        # MASTER_PORT): the child must start as a fresh single process.
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and len(read_metrics(run, "train")) < 3 and proc.poll() is None:
                time.sleep(0.5)
            assert len(read_metrics(run, "train")) >= 3, f"training did not start:\n{log.read_text()[-3000:]}"
            proc.terminate()
            proc.wait(timeout=120)
        finally:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 143, out  # 128 + SIGTERM: a scheduler sees an interrupted run
    assert "SIGTERM" in out and "--resume auto" in out
    saved = list_checkpoints(run)
    assert saved, out
    step = int(saved[-1].name.split("-")[1])
    assert step == max(r["step"] for r in read_metrics(run, "train"))  # the last finished step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == step and "--resume auto" in summary["resume_with"]


def test_failed_start_reruns_with_the_same_command_line(tmp_path, corpus, capsys):
    """A start that stopped before its first checkpoint (here: --valid names a file not there
    yet) leaves config.json; the same command runs once the file exists."""
    train, valid = corpus
    run, late = tmp_path / "r", tmp_path / "late-valid.txt"
    argv = ["pretrain", "--run-dir", str(run), "--corpus", str(train), "--valid", str(late), "--preset", "tiny",
            "--batch-size", "2", "--num-steps", "5", "--max-steps", "2", "--wandb", "disabled", "--no-progress"]
    assert cli(argv) == 2
    assert "late-valid.txt" in capsys.readouterr().err
    assert (run / "config.json").exists() and not list_checkpoints(run)
    late.write_bytes(valid.read_bytes())
    assert cli(argv) == 0, capsys.readouterr().err
    assert "starting the run over" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert cli(argv) == 2  # a run with a checkpoint is never started over
    assert "--resume" in capsys.readouterr().err


def test_resume_auto_starts_then_continues(tmp_path, corpus, capsys):
    train, valid = corpus
    argv = ["pretrain", "--run-dir", str(tmp_path / "r"), "--resume", "auto", "--corpus", str(train), "--valid",
            str(valid), "--preset", "tiny", "--batch-size", "2", "--num-steps", "5", "--checkpoint-every", "2",
            "--log-every", "1", "--wandb", "disabled", "--no-progress"]
    assert cli([*argv, "--max-steps", "2"]) == 0
    assert cli([*argv, "--max-steps", "4"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(tmp_path / "r")][-1] == "step-00000004"
    assert sorted(train_losses(tmp_path / "r")) == [1, 2, 3, 4]


def corpus_targets(path):
    """Targets of one pass, per direction, from the text itself: n + 1 per line of n words."""
    return sum(len(line.split()) + 1 for line in path.read_text(encoding="utf-8").splitlines() if line.split())


def test_epochs_train_every_target_exactly_twice_across_a_resume(tmp_path, corpus):
    train, _ = corpus
    run = tmp_path / "r"
    first = pretrain(micro_run_config(*corpus, epochs=2, max_steps=40, checkpoint_every=20), run, progress=False)
    assert first["stop_reason"] == "max_steps" and 0 < first["epochs"] < 2
    summary = pretrain(None, run, resume=True, progress=False, overrides={"max_steps": 10**9})
    want = 2 * corpus_targets(train)
    assert summary["stop_reason"] == "epochs" and summary["epochs"] == 2.0
    assert summary["targets_trained"] == {"fwd": want, "bwd": want}
    assert summary["tokens_seen"] == want + 2 * len(train.read_text().splitlines())  # + one <S> or </S> per line


def test_resume_applies_safe_flags_and_refuses_changed_unsafe_ones(tmp_path, corpus, capsys):
    train, valid = corpus
    run = tmp_path / "r"
    base = ["pretrain", "--run-dir", str(run), "--corpus", str(train), "--valid", str(valid), "--preset", "tiny",
            "--batch-size", "2", "--num-steps", "5", "--log-every", "1", "--eval-every", "0", "--wandb", "disabled",
            "--no-progress", "--optimizer", "adam", "--lr", "1e-3"]
    assert cli([*base, "--max-steps", "2"]) == 0
    capsys.readouterr()
    # The same command line with a new budget and learning rate: both applied, the change said.
    assert cli([*base, "--resume", "auto", "--max-steps", "3", "--lr", "5e-4"]) == 0
    out = capsys.readouterr().out
    assert "resume: --lr 0.0005 replaces the run's 0.001" in out and "resumed from" in out
    lrs = {r["step"]: r["lr"] for r in read_metrics(run, "train")}
    assert lrs[2] == pytest.approx(1e-3) and lrs[3] == pytest.approx(5e-4)
    for flag, value in (("--batch-size", "4"), ("--preset", "small"), ("--num-steps", "7"), ("--seed", "9")):
        argv = [*base, "--resume", "--max-steps", "4", flag, value]
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} differs from the run's" in err[0], err
    assert [p.name for p in list_checkpoints(run)][-1] == "step-00000003"  # nothing trained by the refusals


def test_early_stop_keeps_the_best_checkpoint(tmp_path, corpus, monkeypatch):
    """Held-out perplexities scripted per evaluation (step 0, 2, 4, ...): the best is at step 4;
    with patience 2 the run stops at step 8, and checkpoints/best holds step 4's weights."""
    from elmo_dist.train import trainer
    from elmo_dist.train.checkpoint import BEST, load_checkpoint
    script = iter([100.0, 50.0, 40.0, 45.0, 47.0, 30.0, 20.0])
    real = trainer.evaluate_perplexity

    def scripted(model, *args, **kwargs):
        return {**real(model, *args, **kwargs), "ppl": next(script)}

    monkeypatch.setattr(trainer, "evaluate_perplexity", scripted)
    run = tmp_path / "r"
    summary = pretrain(micro_run_config(*corpus, max_steps=100, eval_every=2, early_stop_patience=2,
                                        checkpoint_every=0), run, progress=False)
    assert summary["stop_reason"] == "early_stop" and summary["step"] == 8
    assert summary["best"]["step"] == 4 and summary["best"]["ppl"] == 40.0
    state, _, meta = load_checkpoint(run / "checkpoints" / BEST)
    assert meta["step"] == 4 and meta["reason"] == "best" and state["step"] == 4
    final = load_checkpoint(list_checkpoints(run)[-1])[0]
    assert final["step"] == 8 and any(not torch.equal(state["model"][k], final["model"][k]) for k in state["model"])
    assert [p.name for p in list_checkpoints(run)] == ["step-00000008"]  # best is kept beside, not among them


def test_sigterm_during_start_up_then_the_same_command_runs(tmp_path, corpus):
    """SIGTERM while the run starts (config.json written, no checkpoint yet) kills it before any
    checkpoint; running the same command line again trains the run to its end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from elmo_dist.train.distributed import LAUNCHER_VARS
    train, valid = corpus
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "elmo_dist", "pretrain", "--run-dir", str(run), "--corpus", str(train), "--valid",
           str(valid), "--preset", "tiny", "--batch-size", "2", "--num-steps", "5", "--max-steps", "3",
           "--eval-every", "0", "--wandb", "disabled", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    with open(tmp_path / "first.log", "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 240
            while not (run / "config.json").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            proc.kill()
    assert (run / "config.json").exists(), (tmp_path / "first.log").read_text()[-2000:]
    assert proc.returncode != 0 and not list_checkpoints(run), (tmp_path / "first.log").read_text()[-2000:]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "starting the run over" in again.stdout
    assert json.loads((run / "summary.json").read_text())["step"] == 3
