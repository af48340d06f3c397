"""Test-wide settings: no network for wandb; the shared ELMo fixture, required where used."""
import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def require_elmo_fixture():
    """Fails (never skips) when the AllenNLP fixture is missing: a golden test must not pass silently."""
    from tests.golden import FIXTURE_DIR, HAVE_FIXTURE
    if not HAVE_FIXTURE:
        pytest.fail(f"ELMo fixture not found at {FIXTURE_DIR}: put shared/ beside the repository or set ELMO_DIST_FIXTURES")
    return FIXTURE_DIR


@pytest.fixture
def one_thread():
    """One torch thread for the test (small-tensor tests run faster and repeatably that way)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
