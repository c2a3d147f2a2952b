"""What every benchmark prints about the machine it ran on, and its tables (shared by the scripts here)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has spent busy since boot (/proc/stat; nan where unreadable)."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def wait_until_idle(limit: float, threshold: float = 0.15, quiet: float = 3.0, indent: str = "") -> None:
    """Wait (at most `limit` seconds) until the machine has used less than `threshold` cores for `quiet` s."""
    deadline, calm_since = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        before = machine_busy_seconds()
        time.sleep(0.5)
        if (machine_busy_seconds() - before) / 0.5 < threshold:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                return
        else:
            calm_since = None
    print(f"{indent}(the machine stayed busy for {limit:g} s; measuring anyway)", file=sys.stderr, flush=True)


def filesystem(path: Path) -> str:
    """The device and file system `path` is on, with its size and free space (from `df`)."""
    try:
        done = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True, check=True)
        device, kind, size, _, free, *_ = done.stdout.splitlines()[-1].split()
        return f"{device} ({kind}, {size}, {free} free)"
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "unknown"
