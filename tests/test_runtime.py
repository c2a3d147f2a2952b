"""Process-wide settings: OpenMP's thread count and glibc's malloc thresholds."""

from __future__ import annotations

import pytest

from genre import runtime


def test_openmp_threads_default_to_the_usable_cores() -> None:
    environ: dict[str, str] = {}
    assert runtime.configure_threads(environ) == runtime.usable_cores()
    assert environ["OMP_NUM_THREADS"] == str(runtime.usable_cores())


def test_a_users_openmp_thread_count_is_kept() -> None:
    environ = {"OMP_NUM_THREADS": "7"}
    assert runtime.configure_threads(environ) == 7
    assert environ["OMP_NUM_THREADS"] == "7"


@pytest.mark.parametrize("name", runtime.USER_MALLOC_SETTINGS)
def test_a_users_own_malloc_settings_are_left_alone(name: str) -> None:
    assert runtime.keep_freed_memory({name: "131072"}) is False


def test_keeping_freed_memory_does_not_undo_the_chunked_iterators_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_released_large_blocks", True)
    assert runtime.keep_freed_memory({}) is False
