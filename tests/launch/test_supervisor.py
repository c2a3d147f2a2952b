"""The supervisor with small real processes (no MXNet): prefixed output, one line when a role dies, no hang."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from genre.launch.roles import Role
from genre.launch.supervisor import EXIT_FAILED, EXIT_OK, SHUTDOWN_SECONDS, Job


def python(kind: str, index: int, code: str) -> Role:
    return Role(kind, index, (sys.executable, "-c", code))


SLEEPER = "import time; time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('busy', flush=True); time.sleep(60)"
)
KILLED = (
    "import os, signal, time; print('about to die', flush=True); time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"
)


def leaves_first(marker: Path) -> str:
    """A scheduler that ends the job first, as MXNet's often does at shutdown; it leaves its pid in `marker`."""
    return f"import os; open('{marker}.tmp', 'w').write(str(os.getpid())); os.replace('{marker}.tmp', '{marker}')"


def leaves_after(marker: Path, seconds: float, status: int) -> str:
    """A worker that exits with `status` `seconds` after the launcher has seen the scheduler end: the scheduler's
    pid is gone only once the launcher has reaped it. Each wait has a 120 s ceiling, so nothing hangs."""
    return (
        "import os, time\n"
        "deadline = time.monotonic() + 120\n"
        f"while not os.path.exists('{marker}') and time.monotonic() < deadline: time.sleep(0.01)\n"
        f"pid = int(open('{marker}').read())\n"
        "while time.monotonic() < deadline:\n"
        "    try: os.kill(pid, 0)\n"
        "    except ProcessLookupError: break\n"
        "    time.sleep(0.01)\n"
        f"time.sleep({seconds})\n"
        f"raise SystemExit({status})"
    )


@pytest.mark.slow
def test_a_dying_worker_stops_every_role_within_the_grace_period_and_says_which_and_why(capfd) -> None:
    out = io.StringIO()
    roles = [python("scheduler", 0, SLEEPER), python("worker", 0, KILLED), python("worker", 1, STUBBORN)]
    job = Job(roles, grace_seconds=1.0, workdir=".", out=out)
    started = time.monotonic()
    assert job.run() == EXIT_FAILED
    # The promise (SIGKILL 1 s after SIGTERM) is checked by the launcher's own line below; the wall time only shows
    # nothing waited out the 60 s sleepers, with room for three Python start-ups on a loaded machine.
    assert time.monotonic() - started < 60
    assert all(process.popen.poll() is not None for process in job.processes)  # nothing left running
    pids = [process.popen.pid for process in job.processes]
    lines = out.getvalue().splitlines()
    assert f"[worker pid {pids[1]}] about to die" in lines and f"[worker pid {pids[2]}] busy" in lines
    errors = capfd.readouterr().err.splitlines()
    assert f"genre launch: worker pid {pids[1]} died (killed by SIGKILL); stopping the job" in errors
    assert f"genre launch: worker pid {pids[2]} still running 1s after SIGTERM: SIGKILL" in errors


@pytest.mark.slow
def test_workers_are_named_by_their_rank_once_they_say_it_and_a_clean_job_stops_its_servers(capfd) -> None:
    out = io.StringIO()
    joined = "print('joined the dist_sync job as worker {} of 2 (pid 1)'); print('training')"
    roles = [
        python("scheduler", 0, SLEEPER),
        python("server", 0, SLEEPER),
        python("worker", 0, joined.format(1)),
        python("worker", 1, joined.format(0)),
    ]
    assert Job(roles, grace_seconds=0.5, workdir=".", out=out).run() == EXIT_OK
    lines = out.getvalue().splitlines()
    assert "[worker 1] training" in lines and "[worker 0] training" in lines
    assert "genre launch: all 2 workers finished" in capfd.readouterr().err


@pytest.mark.slow
def test_a_failing_worker_is_reported_with_its_exit_status(capfd) -> None:
    roles = [python("scheduler", 0, SLEEPER), python("worker", 0, "raise SystemExit(2)")]
    job = Job(roles, grace_seconds=0.5, workdir=".", out=io.StringIO())
    assert job.run() == EXIT_FAILED
    pid = job.processes[1].popen.pid
    assert f"genre launch: worker pid {pid} failed (exit status 2); stopping the job" in capfd.readouterr().err


@pytest.mark.slow
def test_a_scheduler_ending_before_the_workers_at_shutdown_leaves_the_job_successful(tmp_path: Path, capfd) -> None:
    marker, grace = tmp_path / "scheduler.pid", 0.5
    roles = [
        python("scheduler", 0, leaves_first(marker)),
        python("server", 0, "pass"),  # servers too pass MXNet's exit barrier and leave before the workers
        python("worker", 0, leaves_after(marker, 3 * grace, 0)),  # later than one grace period: once a failure
        python("worker", 1, leaves_after(marker, 3 * grace, 0)),
    ]
    assert Job(roles, grace_seconds=grace, workdir=".", out=io.StringIO()).run() == EXIT_OK
    errors = capfd.readouterr().err
    assert "genre launch: all 2 workers finished" in errors and "stopping the job" not in errors


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seconds", "status", "shutdown_seconds"), [(1.5, 3, SHUTDOWN_SECONDS), (60, 0, 1.0)], ids=["failing", "hanging"]
)
def test_a_worker_that_fails_or_hangs_after_the_scheduler_ended_fails_the_job(
    tmp_path: Path, capfd, seconds: float, status: int, shutdown_seconds: float
) -> None:
    marker = tmp_path / "scheduler.pid"
    roles = [python("scheduler", 0, leaves_first(marker)), python("worker", 0, leaves_after(marker, seconds, status))]
    job = Job(roles, grace_seconds=0.5, workdir=".", out=io.StringIO(), shutdown_seconds=shutdown_seconds)
    assert job.run() == EXIT_FAILED
    assert all(process.popen.poll() is not None for process in job.processes)  # the hanging one was stopped
    pid = job.processes[1].popen.pid
    errors = capfd.readouterr().err.splitlines()
    if status:
        assert f"genre launch: worker pid {pid} failed (exit status 3); stopping the job" in errors
    else:
        assert (
            f"genre launch: scheduler exited, but worker pid {pid} still running 1s later; stopping the job" in errors
        )
