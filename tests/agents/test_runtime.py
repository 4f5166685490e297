"""Process set-up: the C allocator's `malloc` setting."""

import platform
import subprocess
import sys

import pytest

from agents.runtime import set_malloc

glibc = pytest.mark.skipif(not sys.platform.startswith("linux")
                           or platform.libc_ver()[0] != "glibc", reason="glibc only")

# An "update" that allocates three 24 MiB blocks, writes them and frees them, as a training
# step allocates and frees its activations; prints the page faults of 5 updates after 3
# warm-up ones.
UPDATES = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def update():
    blocks = [libc.malloc(24 << 20) for _ in range(3)]
    for b in blocks:
        ctypes.memset(b, 1, 24 << 20)
    for b in reversed(blocks):
        libc.free(b)
for _ in range(3):
    update()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    update()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def test_malloc_setting_is_checked():
    with pytest.raises(ValueError, match="malloc 'jemalloc' unknown; use keep, system"):
        set_malloc("jemalloc")
    assert set_malloc("system") is False  # glibc's defaults: nothing to set


@glibc
def test_keep_reuses_freed_memory_without_page_faults():
    # glibc's defaults hand the freed blocks back to the kernel (mmap, or a trimmed heap
    # top), so every update faults them in again, zeroed page by page: tens of thousands
    # of faults (a fresh process, to keep the defaults).
    out = subprocess.run([sys.executable, "-c", UPDATES + "print(faults)"],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) > 5 * 3 * 24 * 256 // 4, out  # a quarter of the pages, every update
    # `keep` (the run default; process-wide, so this test process keeps it) reuses them.
    assert set_malloc("keep") is True
    scope: dict = {}
    exec(UPDATES, scope)
    assert scope["faults"] < 1000, scope["faults"]
