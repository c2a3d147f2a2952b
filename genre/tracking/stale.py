"""Runs left RUNNING by a process that died (SIGKILL, out of memory, a power cut): who owns a run, whether that
process is still alive, and ending such runs KILLED with a tag that says why.

Every run genre opens is tagged with its owner: host name, pid and the process's start (boot id and start tick,
so a reused pid is not mistaken for the owner). On the owner's host that tells a dead owner for certain; a run
owned on another host, or opened before these tags existed, is "unknown" from here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HOST, PID, PROCESS_START, ENDED_BY = "genre.host", "genre.pid", "genre.process_start", "genre.ended_by"
RESUMED_AFTER = "genre.resumed_after"
ALIVE, GONE, UNKNOWN = "alive", "gone", "unknown"
PROC = Path("/proc")


def _process_start(pid: int) -> str | None:
    """'<boot id>:<start tick>' of a live process `pid`, None when there is none (or only its zombie); '' where
    /proc cannot say (not Linux)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        boot = (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except FileNotFoundError:
        return None if PROC.is_dir() else ""
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else f"{boot}:{fields[19]}"


def owner_tags() -> dict[str, str]:
    """The tags naming this process as a run's owner."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), PROCESS_START: _process_start(os.getpid()) or ""}


def owner_state(tags: Mapping[str, str]) -> str:
    """ALIVE when the run's owning process still runs, GONE when it does not, UNKNOWN when that cannot be told
    from this host."""
    if tags.get(HOST) != socket.gethostname() or not tags.get(PID, "").isdigit():
        return UNKNOWN
    pid = int(tags[PID])
    started = _process_start(pid)
    if started is None:
        return GONE
    if started and tags.get(PROCESS_START):
        return ALIVE if started == tags[PROCESS_START] else GONE  # the pid now belongs to another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        pass
    return ALIVE


def describe_owner(tags: Mapping[str, str]) -> str:
    return f"process {tags[PID]} on {tags[HOST]}" if tags.get(PID) and tags.get(HOST) else "an unrecorded process"


def is_stale(run: Any, older_than_hours: float | None = None) -> bool:
    """A RUNNING run whose process is gone (or, with `older_than_hours`, whose owner cannot be checked from here
    and that started at least that long ago)."""
    if run.info.status != "RUNNING":
        return False
    state = owner_state(run.data.tags)
    if state == UNKNOWN and older_than_hours is not None:
        return time.time() - run.info.start_time / 1000 >= older_than_hours * 3600
    return state == GONE


def running_runs(experiment_ids: list[str] | None = None, query: str = "") -> list[Any]:
    """RUNNING runs (matching the search `query`, if any) of these experiments, or of every active one."""
    from genre.tracking.runs import client

    store = client()
    ids = experiment_ids if experiment_ids is not None else [e.experiment_id for e in store.search_experiments()]
    if not ids:
        return []
    search = "attributes.status = 'RUNNING'" + (f" and {query}" if query else "")
    return list(store.search_runs(ids, search, max_results=50_000, order_by=["attributes.start_time ASC"]))


def end_stale(runs: list[Any], by: str, older_than_hours: float | None = None) -> list[str]:
    """End each of `runs` that is stale (see `is_stale`) KILLED, tagged `genre.ended_by` with who ended it (`by`) and
    why; returns their ids."""
    from genre.tracking.runs import client

    store = client()
    ended = []
    for run in runs:
        if not is_stale(run, older_than_hours):
            continue
        owner = describe_owner(run.data.tags)
        if owner_state(run.data.tags) == GONE:
            why = f"{by}: {owner} that ran it had ended, leaving it RUNNING"
        else:
            why = f"{by}: RUNNING for over {older_than_hours:g} h, owned by {owner} (cannot be checked from here)"
        store.set_tag(run.info.run_id, ENDED_BY, why)
        store.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


def end_stale_matching(query: str, by: str) -> list[str]:
    """End the stale runs of every experiment that match the search `query`; their ids."""
    return end_stale(running_runs(None, query), by)


def check_not_alive(run_id: str) -> dict[str, str]:
    """Before another process takes run `run_id` over (`--resume`): refuse when its owner still runs; otherwise
    the tags that record whom it was taken over from."""
    from genre.errors import ConfigError
    from genre.tracking.runs import client

    run = client().get_run(run_id)
    tags = run.data.tags
    if run.info.status == "RUNNING" and owner_state(tags) == ALIVE:
        raise ConfigError(
            f"run {run_id} is still being trained by {describe_owner(tags)}; stop that process (or let it "
            "finish) before resuming the run"
        )
    if run.info.status == "RUNNING" and owner_state(tags) == GONE:
        return {RESUMED_AFTER: f"{describe_owner(tags)} that ran it had ended, leaving it RUNNING"}
    return {}
