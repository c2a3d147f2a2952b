"""Run a job's processes, stream their output with a role prefix, and stop them all when one dies.

Workers are named by their kvstore rank once they say it (`joined the dist_sync job as worker 0 of 2`; the
scheduler assigns ranks, not the launch order), by their process id until then.

A `dist_sync` job cannot lose a process: the others would wait for it forever inside a push or a pull. So the
supervisor watches every process; the first that exits badly (any role with a non-zero status or a signal) is
named in one line, and every other process is sent SIGTERM, then SIGKILL after a grace period (a worker blocked
inside MXNet does not see SIGTERM). When all workers exit 0, the servers and the scheduler get the grace period to
exit by themselves before they are stopped too.

A server or the scheduler exiting 0 is the job ending, not a fault: they pass MXNet's exit barrier together with
the workers, and usually leave first, while the workers still tear down MXNet (a second on an idle machine, more on
a loaded one). So the workers then get `SHUTDOWN_SECONDS` to exit, and their statuses decide the job's; only a
worker still running after that fails it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from genre.launch.roles import Role, ssh_argv

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_SECONDS = 0.1
SHUTDOWN_SECONDS = 60.0  # measured on 2 cores: workers exit up to 2 s after the scheduler at load 5, 4.7 s at 13
JOINED = re.compile(r"joined the \S+ job as worker (\d+) of \d+")  # what `genre train` prints on joining


class Stopped(Exception):
    """The launcher itself got SIGTERM."""


@dataclass
class Process:
    role: Role
    popen: subprocess.Popen
    name: str
    reader: threading.Thread | None = None

    def stream(self, out: IO[str], lock: threading.Lock) -> None:
        """Copy the process's output lines to `out` with its name in front (the reader thread)."""
        for raw in iter(self.popen.stdout.readline, b""):  # type: ignore[union-attr]
            line = raw.decode(errors="replace").rstrip("\r\n")
            joined = JOINED.search(line) if self.role.kind == "worker" else None
            if joined:
                self.name = f"worker {joined.group(1)}"
            with lock:
                out.write(f"[{self.name}] {line}\n")
                out.flush()


def describe_exit(name: str, role: Role, status: int) -> str:
    """Why a process ended, in the words of the line that stops the job."""
    if status < 0:
        try:
            return f"{name} died (killed by {signal.Signals(-status).name})"
        except ValueError:
            return f"{name} died (killed by signal {-status})"
    if role.host is not None and status == 255:
        return f"{name} on {role.host.name} failed (ssh exit status 255: unreachable host or a dropped connection)"
    return f"{name} failed (exit status {status})"


class Job:
    """The running processes of one launch."""

    def __init__(
        self,
        roles: list[Role],
        grace_seconds: float,
        workdir: str,
        out: IO[str] = sys.stdout,
        shutdown_seconds: float = SHUTDOWN_SECONDS,
    ) -> None:
        self.roles = roles
        self.grace_seconds = grace_seconds
        self.shutdown_seconds = shutdown_seconds
        self.workdir = workdir
        self.out = out
        self.lock = threading.Lock()
        self.processes: list[Process] = []

    def say(self, message: str) -> None:
        with self.lock:
            print(f"genre launch: {message}", file=sys.stderr, flush=True)

    def start(self, role: Role) -> Process:
        if role.host is None:
            argv, env = list(role.argv), {**os.environ, **role.env}
        else:
            argv, env = ssh_argv(role, self.workdir), dict(os.environ)
        popen = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops what it started
        )  # fmt: skip
        process = Process(role, popen, f"worker pid {popen.pid}" if role.kind == "worker" else role.name)
        process.reader = threading.Thread(target=process.stream, args=(self.out, self.lock), daemon=True)
        process.reader.start()
        return process

    def run(self) -> int:
        """Start every role, watch them, return the job's exit status (0 when every worker exited 0)."""
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            for role in self.roles:
                self.processes.append(self.start(role))
                where = f" on {role.host.name}" if role.host else ""
                self.say(f"started {role.kind}{where} (pid {self.processes[-1].popen.pid})")
            return self._watch()
        except (KeyboardInterrupt, Stopped):
            self.say("interrupted; stopping the job")
            self.stop(self.processes)
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _watch(self) -> int:
        """A non-zero status or a signal fails the job at once; all workers exiting 0 ends it well. A server or the
        scheduler exiting 0 is the job ending (worker 0 stops them), so it fails the job only if a worker still runs
        `shutdown_seconds` later."""
        ended: tuple[Process, float] | None = None  # the first server or scheduler that exited 0, and when
        while True:
            statuses = [(process, process.popen.poll()) for process in self.processes]  # one look for every verdict
            failed = [(process, status) for process, status in statuses if status not in (None, 0)]
            if failed:
                process, status = failed[0]
                return self._fail(process, describe_exit(process.name, process.role, status))
            running = [process.name for process, status in statuses if status is None and process.role.kind == "worker"]
            if not running:
                self._finish()
                return EXIT_OK
            if ended is None:
                ended = next(
                    ((p, time.monotonic()) for p, status in statuses if status == 0 and p.role.kind != "worker"), None
                )
            elif time.monotonic() - ended[1] > self.shutdown_seconds:
                late = f"{', '.join(running)} still running {self.shutdown_seconds:g}s later"
                return self._fail(ended[0], f"{ended[0].name} exited, but {late}")
            time.sleep(POLL_SECONDS)

    def _fail(self, process: Process, why: str) -> int:
        """Name what went wrong in one line and stop every other process."""
        if process.reader is not None:
            process.reader.join(timeout=2)  # its last lines come before the verdict
        self.say(f"{why}; stopping the job")
        self.stop([p for p in self.processes if p is not process])
        return EXIT_FAILED

    def _finish(self) -> None:
        """Workers done: the servers and the scheduler normally exit by themselves at once (worker 0 stops them)."""
        rest = [p for p in self.processes if p.role.kind != "worker"]
        deadline = time.monotonic() + self.grace_seconds
        while any(p.popen.poll() is None for p in rest) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        self.stop(rest)
        for process in self.processes:
            if process.reader is not None:
                process.reader.join(timeout=2)
        self.say(f"all {sum(p.role.kind == 'worker' for p in self.processes)} workers finished")

    def stop(self, processes: list[Process]) -> None:
        """SIGTERM to each running process group, SIGKILL to what is left after the grace period."""
        running = [p for p in processes if p.popen.poll() is None]
        _signal_all(running, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while any(p.popen.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        left = [p for p in running if p.popen.poll() is None]
        if left:
            self.say(f"{', '.join(p.name for p in left)} still running {self.grace_seconds:g}s after SIGTERM: SIGKILL")
            _signal_all(left, signal.SIGKILL)
        for process in running:
            process.popen.wait()
            if process.reader is not None:
                process.reader.join(timeout=2)


def _signal_all(processes: list[Process], signum: int) -> None:
    for process in processes:
        try:
            os.killpg(process.popen.pid, signum)
        except ProcessLookupError:
            pass


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped
