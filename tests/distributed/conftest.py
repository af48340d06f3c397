"""Multi-process tests: build DeepSpeed's CPU shared-memory comm op once, up front.

On a fresh machine the first DeepSpeed start compiles that op (~25 s, more under load) into
~/.cache/torch_extensions while holding a file lock. If that happened inside a multi-process
test, one rank would compile while its peers wait on the lock, and the test's own bounds
(collective timeouts, the watchdog, subprocess timeouts) would measure the compiler, not the
code under test. Building it here, in the test process with no bound, keeps them honest.
"""
import pytest


@pytest.fixture(scope="session", autouse=True)
def deepspeed_shm_op_built():
    from deepspeed.accelerator import get_accelerator
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None and builder.is_compatible():
        builder.load()
