"""The job's processes as data: MXNet's environment contract, threads per worker, hosts files, ssh commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from genre.errors import ConfigError
from genre.launch.config import LaunchConfig
from genre.launch.roles import Host, plan_roles, read_hosts, ssh_argv
from tests.conftest import refused

COMMAND = ["genre", "train", "--kvstore", "dist_sync"]
GENRE = (sys.executable, "-m", "genre.cli", "train", "--kvstore", "dist_sync")


def test_a_local_job_is_a_scheduler_servers_and_workers_with_mxnets_environment() -> None:
    planned = plan_roles(LaunchConfig(workers=2, servers=1), COMMAND, [], "job1", 9100, "127.0.0.1", {}, cores=4)
    assert [r.name for r in planned] == ["scheduler", "server 0", "worker 0", "worker 1"]
    for role in planned:
        assert role.host is None
        assert role.env["DMLC_ROLE"] == role.kind
        assert role.env["DMLC_PS_ROOT_URI"] == "127.0.0.1" and role.env["DMLC_PS_ROOT_PORT"] == "9100"
        assert role.env["DMLC_NUM_SERVER"] == "1" and role.env["DMLC_NUM_WORKER"] == "2"
        assert role.env["GENRE_LAUNCH_ID"] == "job1"
    assert [r.env["OMP_NUM_THREADS"] for r in planned] == ["1", "1", "2", "2"]  # each worker its share of 4 cores
    assert planned[2].argv == GENRE  # this Python's genre, wherever `genre` is on PATH
    other = plan_roles(LaunchConfig(), ["./train.sh", "x"], [], "job1", 9100, "127.0.0.1", {}, cores=4)
    assert other[-1].argv == ("./train.sh", "x")
    assert planned[0].argv == planned[1].argv == (sys.executable, "-c", "import mxnet")


def test_threads_the_user_chose_are_kept() -> None:
    config = LaunchConfig(workers=3, servers=2)
    planned = plan_roles(config, COMMAND, [], "job", 1, "127.0.0.1", {}, cores=2, user_threads="3")
    assert {r.env["OMP_NUM_THREADS"] for r in planned} == {"3"}
    alone = plan_roles(config, COMMAND, [], "job", 1, "127.0.0.1", {}, cores=2, user_threads=None)
    assert [r.env["OMP_NUM_THREADS"] for r in alone if r.kind == "worker"] == ["1", "1", "1"]  # never 0


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"workers": 0}, "workers"),
        ({"servers": 0}, "servers"),
        ({"port": -1}, "port"),
        ({"port": 65536}, "port"),
        ({"grace_seconds": -1.0}, "grace_seconds"),
    ],
)
def test_a_job_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(LaunchConfig, settings, named)


def test_bad_jobs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="put the worker command after --"):
        plan_roles(LaunchConfig(), [], [], "job", 1, "127.0.0.1", {})


def test_hosts_files(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# the lab\nnode1\n\nnode2:2222   # a second sshd\n10.0.0.3 slots=4\n")
    assert read_hosts(hosts) == [Host("node1"), Host("node2", 2222), Host("10.0.0.3")]
    hosts.write_text("node1:ssh\n")
    with pytest.raises(ConfigError, match="line 1: expected HOST or HOST:SSH_PORT, got 'node1:ssh'"):
        read_hosts(hosts)
    hosts.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="names no host"):
        read_hosts(hosts)
    with pytest.raises(ConfigError, match="cannot read it"):
        read_hosts(tmp_path / "missing")


def test_remote_roles_go_round_robin_over_ssh_with_the_same_environment() -> None:
    environ = {"MLFLOW_TRACKING_URI": "http://tracker:5000", "HOME": "/root"}
    hosts = [Host("node1"), Host("node2", 2222)]
    planned = plan_roles(LaunchConfig(workers=3, servers=1), COMMAND, hosts, "job", 9100, "10.0.0.1", environ)
    assert [(r.name, r.host) for r in planned] == [
        ("scheduler", None), ("server 0", hosts[0]), ("worker 0", hosts[1]), ("worker 1", hosts[0]),
        ("worker 2", hosts[1]),
    ]  # fmt: skip
    worker = planned[2]
    assert worker.env["DMLC_NODE_HOST"] == "node2" and worker.env["DMLC_PS_ROOT_URI"] == "10.0.0.1"
    assert worker.env["MLFLOW_TRACKING_URI"] == "http://tracker:5000" and "HOME" not in worker.env
    assert "OMP_NUM_THREADS" not in worker.env  # the host's own cores decide, unless the user set it

    argv = ssh_argv(worker, "/srv/genre")
    assert argv[:-2] == ["ssh", "-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-p", "2222"]
    assert argv[-2] == "node2"
    words = shlex.split(argv[-1])
    assert words[:5] == ["cd", "/srv/genre", "&&", "exec", "env"]
    assert "DMLC_ROLE=worker" in words and "GENRE_LAUNCH_ID=job" in words and "DMLC_NUM_WORKER=3" in words
    assert tuple(words[-6:]) == GENRE
