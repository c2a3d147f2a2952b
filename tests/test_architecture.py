"""The package keeps its layers: each part of genre/ imports only the parts it may (issue 14, docs/architecture.md),
no modules import each other in a circle, the command line imports no stage, and no module or function grows past
what a reader takes in (issue 26).

The modules are read with `ast`, never imported, so this takes a fraction of a second. Every import counts: at the
top, inside a function, under `if TYPE_CHECKING:`, relative or absolute. When a module moves or a part is added,
change PARTS and MAY_IMPORT below.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

# The parts of genre/ and their modules; "genre.data.*" is the package genre.data and everything under it.
PARTS: dict[str, tuple[str, ...]] = {
    "core": (
        "genre",
        "genre.config",
        "genre.errors",
        "genre.disk",
        "genre.runtime",
        "genre.devices",
        "genre.metrics",
        "genre.figures",
        "genre.credentials",
        "genre.predictions",
        "genre.intervals",
    ),
    "models": ("genre.models.*",),
    "data": ("genre.data.*",),
    "launch": ("genre.launch.*",),
    "training": ("genre.training.*",),
    "tuning": ("genre.tuning.*",),
    "tracking": ("genre.tracking.*",),
    "cover_model": ("genre.cover_model",),
    "command_config": ("genre.command_config",),
    "stages": ("genre.stages.*",),
    "entry": ("genre.cli", "genre.commands"),
}

# What each part may import besides its own modules: whole parts, or (a dotted name) one module of another part.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "core": (),
    "models": ("core",),
    "data": ("core", "genre.models.inputs"),
    "launch": ("core",),
    "training": ("core", "data", "models", "launch"),
    "tuning": ("core", "data", "models", "training"),
    "tracking": ("core",),
    "cover_model": ("core", "data", "models", "tracking"),
    # the settings of the stages' commands: leaves the command line imports, beside each part's own `config` module
    "command_config": ("core", "genre.data.config", "genre.models.spec", "genre.models.embedding"),
    "stages": ("core", "data", "models", "training", "tuning", "tracking", "launch", "cover_model", "command_config"),
    "entry": tuple(PARTS),
}

# What `genre.cli` may import: the config modules (so `--help` lists every flag at once) and what `main` itself calls;
# never a stage (`genre.commands` imports each stage when its command runs).
CLI_MAY_IMPORT: tuple[str, ...] = (
    "core",
    "command_config",
    "genre.commands",
    "genre.data.config",
    "genre.data.transforms",
    "genre.models.spec",
    "genre.training.config",
    "genre.tuning.config",
    "genre.tracking.config",
    "genre.tracking.runs",
    "genre.tracking.store",
    "genre.launch.config",
)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80

# Libraries only some parts may import (the library and any of its submodules).
ONLY_IMPORTED_BY: dict[str, tuple[str, ...]] = {"mlflow": ("tracking", "cover_model")}

# The arrows issue 14 forbids by name: MAY_IMPORT must never allow them.
ISSUE_14_NEVER: tuple[tuple[str, str], ...] = (
    ("tracking", "data"),
    ("tracking", "models"),
    ("tracking", "training"),
    ("tracking", "tuning"),
    ("tracking", "stages"),
    ("training", "tracking"),
    ("tuning", "tracking"),
    ("models", "data"),
    ("data", "training"),
    ("launch", "training"),
    ("training", "tuning"),
)


def matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return module == pattern[:-2] or module.startswith(pattern[:-1])
    return module == pattern


def parts_of(module: str) -> list[str]:
    return [part for part, patterns in PARTS.items() if any(matches(module, p) for p in patterns)]


def part_of(module: str) -> str | None:
    """The module's part, or None when it is in no part or in several (the placement test names those)."""
    parts = parts_of(module)
    return parts[0] if len(parts) == 1 else None


def may_import(importer: str, module: str) -> bool:
    allowed = MAY_IMPORT[importer]
    return part_of(module) in (importer, *allowed) or any(matches(module, a) for a in allowed if a not in PARTS)


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of `root/genre` by its dotted name (a package by its own name, not `.__init__`)."""
    modules = {}
    for path in sorted((root / "genre").rglob("*.py")):
        names = path.relative_to(root).with_suffix("").parts
        modules[".".join(names[:-1] if names[-1] == "__init__" else names)] = path
    return modules


def imports(name: str, path: Path, modules: Collection[str]) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the module. `from a import b` is `a.b` when that is a
    module, `a` otherwise (b is a name defined in a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.append((node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base))
    return sorted(set(found))


def violations(root: Path) -> list[str]:
    """One line per forbidden import in `root/genre`: `file:line imports module: the rule it breaks`."""
    modules = package_modules(root)
    found = []
    for name, path in modules.items():
        importer = part_of(name)
        if importer is None:
            continue
        for line, module in imports(name, path, modules):
            where = f"{path.relative_to(root).as_posix()}:{line} imports {module}"
            cli_allows = part_of(module) in CLI_MAY_IMPORT or any(matches(module, m) for m in CLI_MAY_IMPORT)
            if name == "genre.cli" and module.startswith("genre") and not cli_allows:
                found.append(
                    f"{where}: the command line imports config modules only, never a stage (genre.commands does)"
                )
                continue
            library = module.split(".")[0]
            if library in ONLY_IMPORTED_BY and importer not in ONLY_IMPORTED_BY[library]:
                found.append(f"{where}: only {' and '.join(ONLY_IMPORTED_BY[library])} import {library}")
            target = part_of(module)
            if target is not None and not may_import(importer, module):
                allowed = ", ".join(MAY_IMPORT[importer]) or "no other part"
                found.append(f"{where}: {importer} must not import {target} ({importer} may import {allowed})")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of `root/genre` and the modules of genre/ it imports (at any level); a name imported from a module
    counts as that module, a package's own `__init__` as the package."""
    modules = package_modules(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imports(name, path, modules):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def circles(root: Path) -> list[str]:
    """One line per group of modules that import each other in a circle (a strongly connected component of the import
    graph), each with one circle through it: `a -> b -> a`."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[str] = []

    def connect(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(_one_circle(graph, sorted(group)))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return found


def _one_circle(graph: dict[str, set[str]], group: list[str]) -> str:
    """A shortest circle from the group's first module back to itself, within the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for target in sorted(graph[module] & members):
            if target == start:
                return " -> ".join([*paths[module], start])
            if target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    return " -> ".join(group)


def oversized(root: Path) -> list[str]:
    """One line per module of `root/genre` over MAX_MODULE_LINES lines and per function (or method) over
    MAX_FUNCTION_LINES, decorators and docstring included."""
    found = []
    for path in sorted((root / "genre").rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(root).as_posix()
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{where}: {lines} lines (at most {MAX_MODULE_LINES}): split it along a seam")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (length := (node.end_lineno or node.lineno) - first + 1) > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def unplaced(root: Path) -> list[str]:
    """One line per module of `root/genre` that is in no part, or in more than one."""
    found = []
    for name, path in package_modules(root).items():
        parts = parts_of(name)
        if len(parts) != 1:
            where = f"{path.relative_to(root).as_posix()} ({name})"
            found.append(f"{where}: in {' and '.join(parts)}" if parts else f"{where}: in no part")
    return found


def test_every_module_of_genre_is_in_exactly_one_part() -> None:
    found = unplaced(PROJECT_ROOT)
    assert not found, "add each to one part of PARTS in tests/test_architecture.py:\n" + "\n".join(found)


def test_each_part_imports_only_what_it_may() -> None:
    found = violations(PROJECT_ROOT)
    assert not found, (
        f"{len(found)} forbidden imports (docs/architecture.md says where the code belongs):\n" + "\n".join(found)
    )


def test_no_modules_import_each_other_in_a_circle() -> None:
    found = circles(PROJECT_ROOT)
    assert not found, "modules that import each other (move what both need below them, or pass it in):\n" + "\n".join(
        found
    )


def test_no_module_or_function_is_too_long_to_take_in() -> None:
    found = oversized(PROJECT_ROOT)
    assert not found, "\n".join(found)


def test_the_table_keeps_the_rules_issue_14_names() -> None:
    for importer, target in ISSUE_14_NEVER:
        allowed = {a if a in PARTS else part_of(a) for a in MAY_IMPORT[importer]}
        assert target not in allowed, f"issue 14: {importer} never imports {target}"


def fake_package(root: Path, files: dict[str, str]) -> Path:
    """A small genre/ tree under `root`: one empty module in most parts, then `files` (path -> source)."""
    skeleton = (
        "__init__ config cli commands cover_model data/__init__ data/pack models/__init__ models/inputs "
        "models/networks tracking/__init__ tracking/tracker tracking/y training/__init__ training/train "
        "tuning/__init__ tuning/study launch/__init__ launch/y stages/__init__ stages/x"
    )
    for path, source in {**{f"genre/{m}.py": "" for m in skeleton.split()}, **files}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(source)
    return root


# (file, its source, what the checker says: a part of the one line expected, or None for nothing)
CHECKER_CASES: list[tuple[str, str, str | None]] = [
    (
        "genre/tracking/x.py",
        "from genre.data.pack import DatasetInfo\n",
        "genre/tracking/x.py:1 imports genre.data.pack: tracking must not import data (tracking may import core)",
    ),
    ("genre/tracking/x.py", "from ..data import pack\n", "x.py:1 imports genre.data.pack: tracking must not"),
    ("genre/tracking/__init__.py", "from ..models import networks\n", "genre.models.networks: tracking must not"),
    ("genre/training/x.py", "def f():\n    import genre.tracking.tracker\n", ":2 imports genre.tracking.tracker"),
    (
        "genre/training/x.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from genre.tuning import study\n",
        "genre/training/x.py:4 imports genre.tuning.study: training must not import tuning",
    ),
    ("genre/config.py", "from genre import cli\n", "genre/config.py:1 imports genre.cli: core must not import entry"),
    ("genre/stages/x.py", "from genre import commands\n", "imports genre.commands: stages must not import entry"),
    ("genre/tuning/x.py", "from genre.stages import x\n", "imports genre.stages.x: tuning must not import stages"),
    ("genre/data/x.py", "from genre.models import networks\n", "imports genre.models.networks: data must not"),
    ("genre/data/x.py", "from genre.models import NetworkInput\n", "imports genre.models: data must not"),
    ("genre/launch/x.py", "from . import y\nimport genre.training.train\n", ":2 imports genre.training.train"),
    ("genre/training/x.py", "import mlflow.pyfunc\n", "imports mlflow.pyfunc: only tracking and cover_model"),
    ("genre/stages/x.py", "from mlflow import MlflowClient\n", "imports mlflow: only tracking and cover_model"),
    ("genre/data/x.py", "from genre.models import inputs\nfrom ..models.inputs import NetworkInput\n", None),
    ("genre/tracking/x.py", "import mlflow\nfrom . import y\nfrom genre import config\n", None),
    ("genre/cover_model.py", "import mlflow.pyfunc\nfrom genre.data import pack\nfrom .tracking import y\n", None),
    ("genre/stages/x.py", "from genre.training import train\nfrom genre.tracking.tracker import Tracker\n", None),
    ("genre/cli.py", "from genre import commands\nfrom genre import config\n", None),
    (
        "genre/cli.py",
        "def f():\n    from genre.stages import x\n",
        "genre/cli.py:2 imports genre.stages.x: the command line",
    ),
]


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    CHECKER_CASES,
    ids=[f"{path} {source.splitlines()[-1].strip()}" for path, source, _ in CHECKER_CASES],
)
def test_the_checker_finds_each_kind_of_forbidden_import(
    tmp_path: Path, path: str, source: str, expected: str | None
) -> None:
    found = violations(fake_package(tmp_path, {path: source}))
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"genre/models/networks.py": "from genre.models import inputs\n"}, []),
        (
            {"genre/models/inputs.py": "def f():\n    import genre.models.networks\n",
             "genre/models/networks.py": "from genre.models.inputs import f\n"},
            ["genre.models.inputs -> genre.models.networks -> genre.models.inputs"],
        ),
        (
            {"genre/stages/x.py": "from genre.stages import y\n", "genre/stages/y.py": "from . import z\n",
             "genre/stages/z.py": "import typing\nif typing.TYPE_CHECKING:\n    from genre.stages.x import a\n"},
            ["genre.stages.x -> genre.stages.y -> genre.stages.z -> genre.stages.x"],
        ),
    ],
    ids=["a line", "a function-level import closes a circle", "three modules, relative and TYPE_CHECKING"],
)  # fmt: skip
def test_the_checker_finds_each_circle(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert circles(fake_package(tmp_path, files)) == expected


def test_the_checker_names_a_long_function_and_a_long_module(tmp_path: Path) -> None:
    body = "".join(f"    x{n} = {n}\n" for n in range(MAX_FUNCTION_LINES))  # with its `def` line, one too many
    filler = "".join(f"y{n} = {n}\n" for n in range(MAX_MODULE_LINES))
    root = fake_package(tmp_path, {"genre/data/pack.py": "def f():\n" + body, "genre/data/x.py": "\n" + filler})
    assert oversized(root) == [
        f"genre/data/pack.py:1 f: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})",
        f"genre/data/x.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES}): split it along a seam",
    ]


def test_a_new_module_outside_every_part_is_named(tmp_path: Path) -> None:
    root = fake_package(tmp_path, {"genre/helpers.py": "import genre.data.pack\n", "genre/data/more.py": ""})
    assert unplaced(root) == ["genre/helpers.py (genre.helpers): in no part"]
