"""Who runs where with which environment: the processes of a parameter-server job, as plain data.

The environment contract is MXNet's (tools/launch.py and dmlc-core's tracker): every process gets
DMLC_PS_ROOT_URI/DMLC_PS_ROOT_PORT (the scheduler), DMLC_NUM_SERVER, DMLC_NUM_WORKER and its DMLC_ROLE.
The scheduler and the servers are `python -c "import mxnet"`: importing MXNet in a process whose role is not
`worker` runs the kvstore server loop and exits when the job ends. Workers run the user's command. The
scheduler always runs here; with a hosts file, servers and then workers go round-robin over the hosts via ssh.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from genre.errors import ConfigError
from genre.launch.config import LaunchConfig
from genre.runtime import USER_THREADS, usable_cores

LOCALHOST = "127.0.0.1"
LAUNCH_ID_VARIABLE = "GENRE_LAUNCH_ID"  # worker 0 tags its MLflow run with it
FORWARDED = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "DMLC_INTERFACE", "PS_VERBOSE")
SERVER_COMMAND = ("-c", "import mxnet")


@dataclass(frozen=True)
class Host:
    name: str
    ssh_port: int = 22


@dataclass(frozen=True)
class Role:
    """One process of the job: `env` is set on top of the launcher's environment (exported on a remote host)."""

    kind: str  # scheduler, server or worker
    index: int
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    host: Host | None = None  # None: this machine

    @property
    def name(self) -> str:
        return self.kind if self.kind == "scheduler" else f"{self.kind} {self.index}"


def read_hosts(path: Path) -> list[Host]:
    """`HOST` or `HOST:SSH_PORT` per line (MPI's `slots=` is ignored); blank lines and `#` comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"--hosts {path}: cannot read it ({error.strerror})") from None
    hosts = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].split("slots=", 1)[0].strip()
        if not text:
            continue
        name, _, port = text.partition(":")
        if not port.isdigit() and port != "":
            raise ConfigError(f"--hosts {path} line {number}: expected HOST or HOST:SSH_PORT, got {line.strip()!r}")
        hosts.append(Host(name, int(port) if port else 22))
    if not hosts:
        raise ConfigError(f"--hosts {path} names no host; put one HOST or HOST:SSH_PORT a line")
    return hosts


def worker_command(command: list[str]) -> tuple[str, ...]:
    """The command after `--`; a leading `genre` runs as `-m genre.cli` of this Python (the servers' Python too:
    on other hosts it must be at the same path, e.g. the same venv location)."""
    if not command:
        raise ConfigError("no command to run: put the worker command after --, e.g. -- genre train --kvstore dist_sync")
    if command[0] == "genre":
        return (sys.executable, "-m", "genre.cli", *command[1:])
    return tuple(command)


def thread_count(kind: str, local_workers: int, cores: int, user_threads: str | None) -> str:
    """OMP_NUM_THREADS for a role on this machine: the user's choice, else each local worker its share of the
    cores, and the scheduler and the servers one (they only add arrays)."""
    if user_threads:
        return user_threads
    if kind != "worker":
        return "1"
    return str(max(1, cores // max(local_workers, 1)))


def plan_roles(
    config: LaunchConfig,
    command: list[str],
    hosts: list[Host],
    launch_id: str,
    port: int,
    scheduler_host: str,
    environ: dict[str, str] | os._Environ = os.environ,
    cores: int | None = None,
    user_threads: str | None = USER_THREADS,
) -> list[Role]:
    """The scheduler (here), `config.servers` servers and `config.workers` workers, with their environments.

    A remote role gets OMP_NUM_THREADS only when the user set it (its host's cores are its own business).
    """
    argv = worker_command(command)
    python = (sys.executable, *SERVER_COMMAND)
    common = {
        "DMLC_PS_ROOT_URI": scheduler_host,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_SERVER": str(config.servers),
        "DMLC_NUM_WORKER": str(config.workers),
        LAUNCH_ID_VARIABLE: launch_id,
        "PYTHONUNBUFFERED": "1",
    }
    placed = [("server", i) for i in range(config.servers)] + [("worker", i) for i in range(config.workers)]
    where = [hosts[n % len(hosts)] if hosts else None for n in range(len(placed))]
    local_workers = sum(1 for (kind, _), host in zip(placed, where, strict=True) if kind == "worker" and not host)
    cores = usable_cores() if cores is None else cores

    def role(kind: str, index: int, host: Host | None) -> Role:
        env = common | {"DMLC_ROLE": kind, "DMLC_NODE_HOST": host.name if host else scheduler_host}
        threads = thread_count(kind, local_workers, cores, user_threads) if host is None else user_threads
        if threads:
            env["OMP_NUM_THREADS"] = threads
        if host is not None:
            env |= {name: environ[name] for name in FORWARDED if environ.get(name)}
        return Role(kind, index, argv if kind == "worker" else python, env, host)

    return [role("scheduler", 0, None)] + [
        role(kind, index, host) for (kind, index), host in zip(placed, where, strict=True)
    ]


def ssh_argv(role: Role, workdir: str) -> list[str]:
    """The local command that runs `role` on its host: ssh with a terminal, so that when the launcher stops the
    ssh client the remote process gets SIGHUP and ends too."""
    assert role.host is not None
    assignments = [f"{name}={value}" for name, value in sorted(role.env.items())]
    script = f"cd {shlex.quote(workdir)} && exec env {shlex.join(assignments)} {shlex.join(role.argv)}"
    options = ["-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-p", str(role.host.ssh_port)]
    return ["ssh", *options, role.host.name, script]


def free_port(host: str = "") -> int:
    """A TCP port free on this machine now (the scheduler binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def address_towards(host: str) -> str:
    """This machine's address on the route to `host` (what the remote roles can reach the scheduler at)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))  # no packet is sent: connecting a UDP socket only picks the route
        except OSError as error:
            raise ConfigError(f"cannot find a route to host {host} ({error}); pass --scheduler-host ADDRESS") from None
        return str(probe.getsockname()[0])
