"""core/memory.py: a process that keeps freed memory reuses its pages instead of unmapping them."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from core.memory import _glibc_mallopt, keep_freed_memory

# In a fresh interpreter: allocate and free a 256 MB array, report resident MB before and after the free.
_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from core.memory import keep_freed_memory
    kept = keep_freed_memory(int(sys.argv[1]))
    def resident_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
    block = np.ones(256 << 20, dtype=np.uint8)
    filled = resident_mb()
    del block
    print(kept, filled, resident_mb())
""")

glibc_only = pytest.mark.skipif(_glibc_mallopt() is None, reason="mallopt is glibc's")


def _probe(keep_mb: int) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(keep_mb)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@glibc_only
def test_a_freed_large_block_stays_resident_when_memory_is_kept():
    kept, filled, after_free = _probe(1024)
    assert kept
    assert after_free > filled - 32  # the 256 MB stay mapped for the next forward


@glibc_only
def test_glibc_defaults_unmap_a_freed_large_block():
    kept, filled, after_free = _probe(0)
    assert not kept
    assert after_free < filled - 200  # mmapped and handed back on free: what made forwards slow


def test_zero_leaves_the_allocator_alone():
    assert keep_freed_memory(0) is False
