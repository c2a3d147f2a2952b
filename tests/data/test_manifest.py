"""The manifest parser: what a user sees for good lines, each kind of bad line, and the shipped manifest."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from genre.data.manifest import ManifestEntry, parse_manifest, read_manifest
from genre.data.problems import Problem
from genre.errors import DataError

GENRES = ("ambient", "dubstep", "folk", "hiphop_rap", "jazz", "metal", "pop", "punk", "rock", "soul")
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "dataset-links.tsv"
URL = "http://f1.bcbits.com/img/a4267850305_2.jpg"


def only_problem(lines: list[str]) -> Problem:
    _, problems = parse_manifest(lines)
    assert len(problems) == 1, problems
    return problems[0]


def test_good_lines_become_entries_with_their_line_numbers() -> None:
    lines = [
        "# covers from bandcamp\n",
        f"{URL}\tambient/a504031536.jpg\r\n",
        "\n",
        "   \n",
        "https://example.org/x.png\tHipHop_rap/b1.png",
    ]
    entries, problems = parse_manifest(lines)
    assert problems == []
    assert entries == [
        ManifestEntry(line=2, url=URL, relpath="ambient/a504031536.jpg"),
        ManifestEntry(line=5, url="https://example.org/x.png", relpath="HipHop_rap/b1.png"),
    ]
    assert [e.genre for e in entries] == ["ambient", "HipHop_rap"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (URL, "expected 'URL<TAB>genre/file.jpg', got 1 column"),
        (f"{URL} rock/a.jpg", "got 1 column"),
        (f"{URL}\trock/a.jpg\textra", "got 3 columns"),
        ("ftp://host/a.jpg\trock/a.jpg", "must start with http:// or https://"),
        ("f1.bcbits.com/img/a.jpg\trock/a.jpg", "must start with http:// or https://"),
        ("http:///img/a.jpg\trock/a.jpg", "has no host"),
        ("http://host:port/a.jpg\trock/a.jpg", "malformed"),
        ("\trock/a.jpg", "URL is empty"),
        (f"{URL}\t/rock/a.jpg", "is absolute"),
        (f"{URL}\t../a.jpg", "'..'"),
        (f"{URL}\trock/../a.jpg", "'..'"),
        (f"{URL}\trock\\a.jpg", "backslash"),
        (f"{URL}\trock//a.jpg", "empty component"),
        (f"{URL}\trock/", "empty component"),
        (f"{URL}\ta.jpg", "has 1 components; expected exactly 'genre/file.jpg'"),
        (f"{URL}\trock/2020/a.jpg", "has 3 components"),
        (f"{URL}\t", "path is empty"),
        (f"{URL}\trock/a.jpg.part", "reserved for unfinished downloads"),
    ],
)
def test_each_bad_line_is_reported_with_its_line_number(line: str, expected: str) -> None:
    lines = ["# header", f"{URL}\tpop/first.jpg", line, f"{URL}\tpop/last.jpg"]
    entries, problems = parse_manifest(lines)
    assert [e.relpath for e in entries] == ["pop/first.jpg", "pop/last.jpg"], "the good lines are kept"
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.stage, problem.item) == ("manifest", "line 3")
    assert expected in problem.reason
    assert str(problem).startswith("manifest: line 3: ")


def test_a_duplicate_path_names_the_earlier_line() -> None:
    lines = [f"{URL}\trock/a.jpg", f"{URL}\trock/b.jpg", "", "http://other/x.jpg\trock/a.jpg"]
    entries, problems = parse_manifest(lines)
    assert [e.line for e in entries] == [1, 2]
    assert problems == [Problem("manifest", "line 4", "path 'rock/a.jpg' is already used by line 1")]


def test_paths_differing_only_in_case_are_duplicates() -> None:
    problem = only_problem([f"{URL}\trock/a.jpg", f"{URL}\tRock/A.jpg"])
    assert problem.item == "line 2"
    assert "differs only in case" in problem.reason and "line 1" in problem.reason


def test_a_rejected_line_does_not_block_its_path_for_later_lines() -> None:
    entries, problems = parse_manifest(["ftp://x/a.jpg\trock/a.jpg", f"{URL}\trock/a.jpg"])
    assert [e.line for e in entries] == [2]
    assert [p.item for p in problems] == ["line 1"]


def test_an_entry_with_an_unsafe_path_cannot_be_built_directly() -> None:
    with pytest.raises(DataError, match="manifest line 7: .*'..'"):
        ManifestEntry(line=7, url=URL, relpath="../../etc/passwd")


def test_read_manifest_reads_a_file_with_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "links.tsv"
    path.write_bytes(f"\ufeff{URL}\tjazz/a.jpg\r\n{URL}\tjazz/b.jpg\r\n".encode())
    entries, problems = read_manifest(path)
    assert problems == []
    assert [(e.line, e.relpath) for e in entries] == [(1, "jazz/a.jpg"), (2, "jazz/b.jpg")]


def test_a_missing_manifest_is_a_data_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert str(path) in message and "does not exist" in message
    assert "\n" not in message


def test_a_manifest_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.tsv"
    path.write_bytes(f"{URL}\trock/caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(path)


def test_a_folder_given_as_manifest_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"cannot read manifest {tmp_path}")):
        read_manifest(tmp_path)


def test_the_shipped_manifest_has_10_genres_of_1000_covers() -> None:
    entries, problems = read_manifest(SHIPPED)
    assert problems == []
    assert len(entries) == 10_000
    assert Counter(e.genre for e in entries) == dict.fromkeys(GENRES, 1000)
    assert len({e.relpath for e in entries}) == 10_000
    assert entries[0] == ManifestEntry(line=1, url=URL, relpath="ambient/a504031536.jpg")
