"""The dataset manifest: one `URL<TAB>genre/file.jpg` line per cover.

The manifest decides where each downloaded file lands, so every path is checked before anything is
written: a bad line becomes a `Problem` and the rest of the manifest is still used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from genre.data.problems import Problem
from genre.errors import DataError

_FORMAT = "'URL<TAB>genre/file.jpg'"
# http.client refuses these in a URL, and they have no business in a file name either.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
# The downloader writes `<file>.<random>.part` before renaming; a manifest file may not look like one.
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class ManifestEntry:
    """One cover to fetch. `relpath` is a checked posix path `genre/file`, safe to join under a folder.

    `line` is the 1-based manifest line, so later problems can point back to it.
    """

    line: int
    url: str
    relpath: str

    def __post_init__(self) -> None:
        reason = url_problem(self.url) or path_problem(self.relpath)
        if reason:
            raise DataError(f"manifest line {self.line}: {reason}")

    @property
    def genre(self) -> str:
        return self.relpath.split("/", 1)[0]


def url_problem(url: str) -> str | None:
    """Why `url` cannot be downloaded, or None if it looks fetchable (http/https with a host)."""
    if not url:
        return "URL is empty"
    if _URL_FORBIDDEN.search(url):
        return f"URL {url!r} contains whitespace or control characters; percent-encode them"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError as exc:
        return f"URL {url!r} is malformed ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"URL {url!r} must start with http:// or https://"
    if not host:
        return f"URL {url!r} has no host"
    return None


def path_problem(relpath: str) -> str | None:
    """Why `relpath` is not a safe `genre/file` path, or None if it is.

    Anything that could escape the destination folder or name a different file on another system
    (absolute, `..`, backslashes, empty components) is refused rather than normalised.
    """
    if not relpath:
        return "path is empty; expected 'genre/file.jpg'"
    if "\\" in relpath:
        return f"path {relpath!r} contains a backslash; separate genre and file with '/'"
    if _PATH_FORBIDDEN.search(relpath):
        return f"path {relpath!r} contains control characters"
    if relpath.startswith("/"):
        return f"path {relpath!r} is absolute; give it as 'genre/file.jpg'"
    parts = relpath.split("/")
    if "" in parts:
        return f"path {relpath!r} has an empty component; expected 'genre/file.jpg'"
    if ".." in parts or "." in parts:
        return f"path {relpath!r} contains '..' or '.'; expected 'genre/file.jpg'"
    if len(parts) != 2:
        return f"path {relpath!r} has {len(parts)} components; expected exactly 'genre/file.jpg'"
    if parts[1].endswith(PART_SUFFIX):
        return f"path {relpath!r} ends in {PART_SUFFIX!r}, which is reserved for unfinished downloads"
    return None


def parse_manifest(lines: Iterable[str]) -> tuple[list[ManifestEntry], list[Problem]]:
    """Parse manifest lines into entries, collecting each bad line as a `Problem` (never raising).

    Blank lines and `#` comments are skipped; line numbers count every line, 1-based, as an editor
    shows them. A path given twice keeps its first line; paths that differ only in case are duplicates
    too, because they are the same file on macOS and Windows.
    """
    entries: list[ManifestEntry] = []
    problems: list[Problem] = []
    first_line: dict[str, tuple[int, str]] = {}
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        reason = _line_problem(line, first_line)
        if reason:
            problems.append(Problem(stage="manifest", item=f"line {n}", reason=reason))
            continue
        url, relpath = line.split("\t")
        first_line[relpath.casefold()] = (n, relpath)
        entries.append(ManifestEntry(line=n, url=url, relpath=relpath))
    return entries, problems


def _line_problem(line: str, first_line: dict[str, tuple[int, str]]) -> str | None:
    columns = line.split("\t")
    if len(columns) != 2:
        plural = "column" if len(columns) == 1 else "columns"
        return f"expected {_FORMAT}, got {len(columns)} {plural}"
    url, relpath = columns
    reason = url_problem(url) or path_problem(relpath)
    if reason:
        return reason
    earlier = first_line.get(relpath.casefold())
    if earlier is None:
        return None
    earlier_line, earlier_path = earlier
    if earlier_path == relpath:
        return f"path {relpath!r} is already used by line {earlier_line}"
    return (
        f"path {relpath!r} differs only in case from {earlier_path!r} on line {earlier_line}, "
        "which is the same file on case-insensitive file systems"
    )


def read_manifest(path: Path) -> tuple[list[ManifestEntry], list[Problem]]:
    """Read and parse a UTF-8 manifest file (a leading byte-order mark is allowed).

    Raises `DataError` only when the file itself cannot be read; bad lines come back as problems.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"manifest {path} does not exist; pass the path of a 'URL<TAB>genre/file.jpg' file "
            "(the dataset's is data/dataset-links.tsv)"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and retry") from None
    except OSError as exc:
        raise DataError(
            f"cannot read manifest {path}: {exc.strerror or exc}; check the path and its permissions"
        ) from None
    # split("\n") rather than splitlines(): line numbers must match an editor's, and splitlines()
    # also breaks at form feeds and other rare separators.
    return parse_manifest(text.split("\n"))
