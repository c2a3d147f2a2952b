"""Problems found in the input (a bad manifest line, a failed download, an undecodable image).

They are collected, never raised one by one, so a run finishes the good items and reports the bad ones.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One item that was left out, and why. `stage` is 'manifest', 'download' or 'decode'."""

    stage: str
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.stage}: {self.item}: {self.reason}"


def summarise(problems: Iterable[Problem], first: int = 5) -> str:
    """A short human summary: counts per stage and the first few reasons."""
    problems = list(problems)
    if not problems:
        return "no problems"
    counts = Counter(p.stage for p in problems)
    head = ", ".join(f"{n} {stage}" for stage, n in sorted(counts.items()))
    lines = [f"{len(problems)} problem(s) ({head}); first {min(first, len(problems))}:"]
    lines += [f"  {p}" for p in problems[:first]]
    return "\n".join(lines)


def write_report(path: Path, problems: Iterable[Problem], **summary: object) -> Path:
    """Write the problems (and any summary fields) as JSON; the file is replaced atomically."""
    problems = list(problems)
    payload = {**summary, "problem_count": len(problems), "problems": [asdict(p) for p in problems]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
