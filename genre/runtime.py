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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
LARGE_BLOCK_BYTES = 1 << 20
DEFAULT_TRIM_BYTES = 128 << 10  # glibc's own M_TRIM_THRESHOLD
KEPT_BLOCK_BYTES = 32 << 20
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_released_large_blocks = False  # `release_large_blocks` ran: `keep_freed_memory` must not undo it


def _mallopt(settings: list[tuple[int, int]]) -> bool:
    """Apply glibc `mallopt` settings; False where there is no glibc or one is refused."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    except (OSError, AttributeError):
        return False


def release_large_blocks() -> bool:
    """Make glibc return freed blocks of 1 MiB and more to the system at once.

    The chunked iterator allocates and frees chunk-sized arrays from two threads; glibc's default keeps
    such blocks in its heaps, so resident memory crept up with the dataset size (benchmarks/iterator_memory.py:
    5.8 chunks at 1x, 16.8 at 16x; 3.3 with this). The trim threshold goes back to glibc's default, which
    `keep_freed_memory` may have raised when the process imported the decoder. Returns False where there is no glibc.
    """
    global _released_large_blocks
    _released_large_blocks = True
    return _mallopt([(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES), (M_TRIM_THRESHOLD, DEFAULT_TRIM_BYTES)])


def keep_freed_memory(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Let glibc keep freed blocks of up to 32 MiB for the next allocation instead of returning them to the system.

    Decoding a cover allocates and frees blocks of 0.4-1 MiB (Pillow's image buffers, the pixels' bytes). In a fresh
    process glibc gave them back to the system each time, so each cover faulted their pages in again: 0.5-0.7 of
    3.1-3.3 s of CPU for 600 covers at 350 px (docs/benchmarks.md). Called where covers are decoded
    (`genre.data.images`); it leaves alone a user's own malloc settings and a process whose chunked iterator has
    asked for the opposite (`release_large_blocks`). Returns whether the settings were made.
    """
    if _released_large_blocks or any(name in environ for name in USER_MALLOC_SETTINGS):
        return False
    return _mallopt([(M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES), (M_TRIM_THRESHOLD, 2 * KEPT_BLOCK_BYTES)])
