"""`genre --help` and `genre <command> --help` answer without importing the heavy libraries (issue 17, item 4).

Not timed (a loaded machine would make that flaky): `benchmarks/cli_startup.py` measures the wall times. What a
user would notice is the cause, a help text that first imports MXNet, MLflow, Optuna or GluonCV for seconds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("mxnet", "mlflow", "optuna", "gluoncv", "matplotlib", "sklearn", "scipy")


def test_help_builds_every_command_without_heavy_libraries():
    probe = (
        "import contextlib, io, sys\n"
        "from genre import cli\n"
        "cli.build_parser()\n"  # every command's flags, from its config dataclass
        "sys.argv = ['genre', 'train', '--help']\n"  # main's own steps too (the password check before parsing)
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    cli.main()\n"
        "print('--model' in out.getvalue())\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown, imported = done.stdout.splitlines()
    assert shown == "True", "genre train --help did not print the training flags"
    assert imported == "none", f"genre train --help imported {imported}"


def test_the_help_of_genre_and_of_every_command_prints(capsys) -> None:
    """argparse formats every help text with `%`: one unescaped percent sign broke `genre --help` for every command."""
    from genre.cli import COMMANDS, build_parser

    for words in (["--help"], *([command.name, "--help"] for command in COMMANDS)):
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args(words)
        assert done.value.code == 0, words
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: genre {words[0] if len(words) > 1 else ''}".rstrip()), words
    assert "with 95% intervals" in (build_parser().format_help())
