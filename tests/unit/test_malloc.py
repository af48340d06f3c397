"""train.malloc: with freed memory kept in the heap, a large buffer allocated again can be served
from freed pages without page faults; with glibc's defaults it never is (each run in a fresh
interpreter: the setting is per process). Measured: with the heap kept, 1 to 3 of 4
re-allocations land on freed pages, depending on where small allocations split the heap."""
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from elmo_dist.train.malloc import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(5):  # the first allocation faults its pages in either way
    before = faults()
    torch.empty(1280, 10002).fill_(1.0)  # 51 MB, the tiny full softmax's (N, V) block
    counts.append(faults() - before)
print(min(counts[1:]))  # the heap's layout decides which re-allocation lands on freed pages
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_kept_heap_reuses_pages():
    pages = 1280 * 10002 * 4 // 4096  # 12,500
    assert _faults("system") > pages // 2  # glibc unmaps it on free: every re-allocation faults again
    assert _faults("keep") < pages // 10  # some re-allocation reuses the freed pages
