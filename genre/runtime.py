"""Process-wide settings that must be made before MXNet is imported.

MXNet's CPU default runs OpenMP on half the cores; on this project's 2-core machines that nearly halves
training speed (207 vs 364 img/s for resnet18_v1b at 64 px, benchmarks/train_throughput.py). `configure_threads`
sets the thread count from the cores this process may use, unless the user already chose one.
`genre/__init__.py` calls it, so it runs before any module of the package imports mxnet.
"""

from __future__ import annotations

import os

USER_THREADS = os.environ.get("OMP_NUM_THREADS") or None  # the user's own choice, read before configure_threads

# The SQLAlchemy pool of each database a `genre tune` worker uses (the Optuna study; MLflow's store when it is a
# database): one connection kept open, a second only while two threads (a trial and its heartbeat) need one at
# once. SQLAlchemy's default (5 kept, 10 more on demand) let one worker hold 4 and, in principle, 30.
POOL_LIMITS = {"pool_size": 1, "max_overflow": 1}


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container limits, unlike `os.cpu_count`)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(environ: dict[str, str] | os._Environ = os.environ) -> int:
    """Set OpenMP's thread count to the usable cores unless `OMP_NUM_THREADS` is set; return the count in force."""
    if not environ.get("OMP_NUM_THREADS"):
        environ["OMP_NUM_THREADS"] = str(usable_cores())
    return int(environ["OMP_NUM_THREADS"])


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK_BYTES = 1 << 20


def release_large_blocks() -> bool:
    """Make glibc return freed blocks of 1 MiB and more to the system at once.

    The chunked iterator allocates and frees chunk-sized arrays from two threads; glibc's default keeps
    such blocks in its heaps, so resident memory crept up with the dataset size (benchmarks/iterator_memory.py:
    5.8 chunks at 1x, 16.8 at 16x; 3.3 with this). Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
    except (OSError, AttributeError):
        return False
