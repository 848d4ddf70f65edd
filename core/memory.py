"""Let a process that forwards video batches reuse freed memory instead of faulting it in again.

glibc serves every block above 32 MiB with a fresh mmap and unmaps it when it is freed. One forward
of a 48-clip batch allocates several such tensors (the float input alone is 48 × 3 × 16 × 112 × 112 ×
4 B = 116 MB), so every forward faulted hundreds of MB of new pages in: on one torch thread that was
54-74 % of the zoo models' forward time (`scripts/bench_forward.py`, "glibc defaults" column). With
mmap off and a high trim threshold the heap keeps those pages and the next forward reuses them. The
arithmetic is untouched, so answers are bitwise the same; the price is resident memory: a process keeps
about the peak of its forwards (the script above prints its own: 1.1 GB → 3.0 GB with five models).

Called where a process starts doing tensor work: TorchServe's handler, the Celery worker processes,
the in-process oracle of the benchmarks and training. A no-op (returns False) off glibc or when
`VAAS_MALLOC_KEEP_MB` is 0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

from core.settings import get_settings

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory(keep_mb: int | None = None) -> bool:
    """Turn off mmap for large blocks and keep up to `keep_mb` MiB of freed heap (default: settings).

    True when glibc accepted both settings. Safe to call more than once.
    """
    keep_mb = get_settings().malloc_keep_mb if keep_mb is None else keep_mb
    if keep_mb <= 0:
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    accepted = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, keep_mb << 20) == 1
    if not accepted:
        logger.warning("glibc refused the malloc settings; large tensors will be mmapped per allocation")
    return accepted


def _glibc_mallopt():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
