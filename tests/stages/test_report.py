"""`genre report` as a user runs it: a whole page, one section of a page that other text shares, the wall time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from genre.cli import main
from genre.errors import ConfigError
from genre.stages.report import section_markers, wall_time, with_section
from tests.conftest import use_store
from tests.stages.test_suite import RF

BEGIN, END = section_markers("covers-dev")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def suite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tracking store holding one finished suite run (a quick forest on the digits), made once for this file."""
    import mlflow

    folder = tmp_path_factory.mktemp("suite")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        use_store(patch, uri, folder)
        (folder / "experiments" / "baselines").mkdir(parents=True)
        (folder / "experiments" / "baselines" / "quick-rf.yaml").write_text(RF)
        assert main(["suite", "-q", "quick-rf", "--seeds", "0"]) == 0
        while mlflow.active_run():
            mlflow.end_run()
    return uri


@pytest.fixture
def store(suite_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """That store, reported on from a working folder of the test's own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", suite_store)
    monkeypatch.chdir(tmp_path)
    return suite_store


def report(*flags: str) -> int:
    return main(["report", "-q", "--experiment", "genre-suite-custom", *flags])


def images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)


def test_wall_time_reads_in_the_largest_sensible_unit() -> None:
    assert wall_time(0) == "0 s"
    assert wall_time(45.2) == "45 s"
    assert wall_time(59.4) == "59 s"
    assert wall_time(59.6) == "1 min"
    assert wall_time(14 * 60 + 10) == "14 min"
    assert wall_time(3599) == "1 h 00 min"
    assert wall_time(2 * 3600 + 5 * 60 + 20) == "2 h 05 min"
    assert wall_time(26 * 3600) == "26 h 00 min"


def test_a_section_is_replaced_between_its_markers_and_every_other_byte_is_kept() -> None:
    digits = (
        "<!-- genre report --section digits: begin -->\r\nby hand\r\n<!-- genre report --section digits: end -->\r\n"
    )
    before = f"# Results\r\n\r\nWritten by hand, CRLF.\r\n{digits}\r\n{BEGIN}\r\n"
    after = f"{END}\r\n\r\nClosing words, no newline at the end"

    text = with_section(f"{before}stale table\r\n\r\n{after}", "covers-dev", "## Covers\n\n| a |\n", "docs/results.md")

    assert text == f"{before}\n## Covers\n\n| a |\n\n{after}"
    assert with_section(text, "covers-dev", "## Covers\n\n| a |\n", "docs/results.md") == text


def test_a_missing_section_is_appended_with_its_markers_and_a_new_file_is_only_the_section() -> None:
    assert with_section("# Page\n\nlast line", "covers-dev", "## Covers\n", "p.md") == (
        f"# Page\n\nlast line\n\n{BEGIN}\n\n## Covers\n\n{END}\n"
    )
    assert with_section("# Page\n", "covers-dev", "## Covers\n", "p.md").startswith(f"# Page\n\n{BEGIN}\n")
    assert with_section("", "covers-dev", "## Covers\n", "p.md") == f"{BEGIN}\n\n## Covers\n\n{END}\n"


def test_a_section_that_begins_and_never_ends_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^p\.md line 2: section 'covers-dev' begins but never ends"):
        with_section(f"# Page\n{BEGIN}\nold\n", "covers-dev", "## Covers\n", "p.md")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--section", "covers dev"], "'section' must be letters, digits, '-' and '_' only, got 'covers dev'"),
        (["--section", "../covers"], "'section' must be letters, digits, '-' and '_' only, got '../covers'"),
        (["--section", "covers-dev", "--format", "html"], "'section' needs --format md"),
    ],
)
def test_a_bad_section_is_a_one_line_error_before_anything_is_written(
    tracking_store: str, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    assert report("--output", "page.md", *flags) == 2

    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1
    assert not Path("page.md").exists() and not Path("page").exists()


@pytest.mark.slow
def test_a_section_joins_the_page_with_its_own_figures_and_regenerating_the_page_keeps_it(store: str) -> None:
    from genre.stages.report import experiment_members

    page = Path("docs/results.md")
    assert report("--output", str(page)) == 0
    whole = page.read_text()
    whole_figures = {path: path.stat().st_mtime_ns for path in Path("docs/results").glob("*.png")}
    assert [Path("docs", link) for link in images(whole)] == sorted(whole_figures)

    assert report("--output", str(page), "--section", "covers-dev") == 0

    text = page.read_text()
    assert text.startswith(whole), "the page before the section is kept byte for byte"
    section = text[len(whole) :]
    assert section.startswith(f"\n{BEGIN}\n") and section.endswith(f"{END}\n")
    headings = [line for line in section.splitlines() if line.startswith("#")]
    assert headings == [
        "## Results of suite custom (MLflow experiment genre-suite-custom)",
        "### digits/full",
        "### Figures",
    ]
    assert images(section) == ["results/covers-dev/accuracy.png", "results/covers-dev/confusion_best.png"]
    assert all((page.parent / link).read_bytes()[:8] == PNG for link in images(section))
    assert {path: path.stat().st_mtime_ns for path in Path("docs/results").glob("*.png")} == whole_figures
    (run,) = experiment_members("genre-suite-custom")
    assert f"The run took {wall_time(run.seconds)} of wall time." in section

    assert report("--output", str(page)) == 0  # `make results` regenerates the whole page

    regenerated = page.read_text()
    assert regenerated.count(BEGIN) == 1 and regenerated.endswith(section), "the section is kept, unchanged"
    assert regenerated.count("# Results of suite custom") == 2

    assert report("--output", str(page), "--section", "covers-dev") == 0

    assert page.read_text().startswith(regenerated[: -len(section)] + f"\n{BEGIN}\n")
    assert page.read_text().count(BEGIN) == 1


@pytest.mark.slow
def test_a_section_replaces_its_part_of_a_hand_written_page_and_the_html_page_states_the_wall_time(
    store: str,
) -> None:
    page = Path("notes.md")
    head, tail = f"Notes by hand.\n\n{BEGIN}\n", f"{END}\n\nMore notes, no newline at the end"
    page.write_text(f"{head}stale numbers\n{tail}")

    assert report("--output", str(page), "--section", "covers-dev") == 0

    text = page.read_text()
    assert text.startswith(head) and text.endswith(tail) and "stale numbers" not in text
    assert "### digits/full" in text and all(Path(link).read_bytes()[:8] == PNG for link in images(text))

    assert report("--format", "html", "--output", "page.html") == 0

    assert re.search(
        r"<p>Generated by .* The run took (\d+ s|\d+ min|\d+ h \d\d min) of wall time\.", Path("page.html").read_text()
    )


@pytest.mark.slow
def test_a_datasets_experiment_reports_its_models_in_the_same_table_and_figures(tracking_store: str) -> None:
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0  # its prepare run: not a row
    quick = ["-q", "--data", "digits16"]
    for seed in ("0", "1"):
        assert main(["baseline", *quick, "--model", "rf", "--trees", "10", "--seed", seed]) == 0
    assert main(["baseline", *quick, "--model", "rf", "--trees", "30"]) == 0
    net = ["--epochs", "2", "--conv-filters", "8", "--dense-units", "", "--batch-size", "128"]
    assert main(["train", *quick, *net]) == 0

    assert main(["report", "-q", "--experiment", "genre-digits", "--output", "digits.md"]) == 0

    page = Path("digits.md").read_text()
    assert page.startswith("# Results of MLflow experiment genre-digits\n")
    table = [line.split(" | ") for line in page.splitlines() if line.startswith("| ") and "---" not in line][1:]
    rows = {cells[1]: cells for cells in table}
    (few, more) = sorted(name for name in rows if name.startswith("baseline-rf (run "))
    assert {rows[few][3], rows[more][3]} == {"0,1", "0"}  # ten trees over two seeds; thirty trees, one seed
    assert rows["train-convnet"][2] == "convnet 8" and len(rows) == 3
    assert images(page) == ["digits/accuracy.png", "digits/learning_curves.png", "digits/confusion_best.png"]
    assert all(Path(link).read_bytes()[:8] == PNG for link in images(page))
