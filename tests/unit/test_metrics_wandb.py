"""wandb (offline, no network): a resumed run logs into the same W&B run; the run's mode wins."""
import pytest


def test_resume_keeps_the_wandb_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from elmo_dist.metrics import WANDB_ID_FILE, MetricsLogger
    monkeypatch.setenv("WANDB_MODE", "online")  # the environment says online; the run says offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = MetricsLogger(tmp_path, {"a": 1}, wandb_mode="offline")
    assert first._wandb is not None and first._wandb.settings.mode == "offline"
    run_id = first._wandb.id
    first.log({"kind": "train", "step": 1, "loss": 2.0})
    first.close()
    assert (tmp_path / WANDB_ID_FILE).read_text().strip() == run_id
    again = MetricsLogger(tmp_path, {"a": 1}, wandb_mode="offline", resume=True)
    assert again._wandb.id == run_id
    again.close()
    fresh = MetricsLogger(tmp_path / "other", {"a": 1}, wandb_mode="offline")
    assert fresh._wandb.id != run_id
    fresh.close()
