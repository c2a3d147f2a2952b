"""The settings of `genre launch` (`LaunchConfig`): a distributed job's shape, listed by the command line without
starting anything."""

from __future__ import annotations

from dataclasses import dataclass

from genre.config import check_range, setting


@dataclass(frozen=True)
class LaunchConfig:
    """A job's shape; the command after `--` is what each worker runs."""

    workers: int = setting(2, "worker processes; each runs the command after --")
    servers: int = setting(1, "parameter-server processes (they sum the workers' gradients)")
    hosts: str = setting(
        "", "file of hosts for servers and workers over ssh, one HOST or HOST:SSH_PORT a line; empty = this machine"
    )
    scheduler_host: str = setting(
        "", "address at which the roles reach the scheduler, which runs here (default: 127.0.0.1, or with --hosts "
        "this machine's address towards the first host)"
    )  # fmt: skip
    port: int = setting(0, "scheduler port (0 = a free one)")
    workdir: str = setting("", "with --hosts: folder to run in on every host (default: this folder's path)")
    grace_seconds: float = setting(5.0, "when a role dies, seconds the others get to stop on SIGTERM before SIGKILL")

    def __post_init__(self) -> None:
        check_range(self, "workers", 1)
        check_range(self, "servers", 1)
        check_range(self, "port", 0, 65535, note=" (0 = a free one)")
        check_range(self, "grace_seconds", 0.0)
