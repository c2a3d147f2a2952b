"""The supervisor with small real processes (no MXNet): prefixed output, one line when a role dies, no hang."""

from __future__ import annotations

import io
import sys
import time

from genre.launch.roles import Role
from genre.launch.supervisor import EXIT_FAILED, EXIT_OK, Job


def python(kind: str, index: int, code: str) -> Role:
    return Role(kind, index, (sys.executable, "-c", code))


SLEEPER = "import time; time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('busy', flush=True); time.sleep(60)"
)
KILLED = (
    "import os, signal, time; print('about to die', flush=True); time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"
)


def test_a_dying_worker_stops_every_role_within_the_grace_period_and_says_which_and_why(capfd) -> None:
    out = io.StringIO()
    roles = [python("scheduler", 0, SLEEPER), python("worker", 0, KILLED), python("worker", 1, STUBBORN)]
    job = Job(roles, grace_seconds=1.0, workdir=".", out=out)
    started = time.monotonic()
    assert job.run() == EXIT_FAILED
    assert time.monotonic() - started < 8
    assert all(process.popen.poll() is not None for process in job.processes)  # nothing left running
    pids = [process.popen.pid for process in job.processes]
    lines = out.getvalue().splitlines()
    assert f"[worker pid {pids[1]}] about to die" in lines and f"[worker pid {pids[2]}] busy" in lines
    errors = capfd.readouterr().err.splitlines()
    assert f"genre launch: worker pid {pids[1]} died (killed by SIGKILL); stopping the job" in errors
    assert f"genre launch: worker pid {pids[2]} still running 1s after SIGTERM: SIGKILL" in errors


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


def test_a_failing_worker_is_reported_with_its_exit_status(capfd) -> None:
    roles = [python("scheduler", 0, SLEEPER), python("worker", 0, "raise SystemExit(2)")]
    job = Job(roles, grace_seconds=0.5, workdir=".", out=io.StringIO())
    assert job.run() == EXIT_FAILED
    pid = job.processes[1].popen.pid
    assert f"genre launch: worker pid {pid} failed (exit status 2); stopping the job" in capfd.readouterr().err
