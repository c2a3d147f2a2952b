"""`genre report` as a user runs it: a whole page, one section of a page that other text shares, the wall time, and
each row's 95% intervals from its runs' pooled per-cover predictions (its folds too, cross-validated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from genre.cli import main
from genre.errors import ConfigError
from genre.intervals import Bootstrap, accuracy_intervals
from genre.predictions import CoverPredictions
from genre.stages.pooling import pool
from genre.stages.report import row_intervals, section_markers, wall_time, with_section
from genre.stages.report_table import TABLE_HEADER, result_rows, table_cells
from tests.conftest import use_store
from tests.scored_runs import COVERS, folds_of, predictions, scored_run
from tests.stages.test_report_table import run
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


def members_of(logged: dict[str, CoverPredictions | None]) -> list:
    """The runs whose ids (name-seed-start, see `run`) key `logged`, each better on validation than the next."""
    runs = [key.split("-") for key in logged]
    return [run(name, int(seed), 0.9 - int(start) / 10, 0.5, int(start)) for name, seed, start in runs]


def test_each_rows_interval_is_of_its_runs_pooled_predictions_and_each_row_is_paired_with_the_best() -> None:
    def right(step: int, seed: int = 0) -> CoverPredictions:
        return predictions(COVERS, [(i + seed) % step != 0 for i in range(len(COVERS))])

    logged = {
        "rf-0-1": right(2), "cnn-0-2": right(3), "cnn-1-3": right(3, seed=1), "mixed-0-4": right(4),
        "mixed-1-5": None, "old-0-6": None,
    }  # fmt: skip
    rows, _ = result_rows(members_of(logged))
    quick = Bootstrap(resamples=2000)

    found = dict(zip([row.first.name for row in rows], row_intervals(rows, logged, quick), strict=True))

    assert [row.first.name for row in rows] == ["rf", "cnn", "mixed", "old"]
    cnn = pool([logged["cnn-0-2"], logged["cnn-1-3"]])
    assert found["cnn"].accuracy == accuracy_intervals(cnn.correct, cnn.genres, quick).accuracy
    assert found["cnn"].covers == 60 and found["cnn"].per_seed_accuracy == [40 / 60, 40 / 60]
    versus = found["cnn"].versus_best
    assert versus is not None and versus.covers == 60
    assert versus.balanced_accuracy.estimate == pytest.approx(
        cnn.balanced_accuracy - pool([logged["rf-0-1"]]).balanced_accuracy
    )
    assert found["rf"].versus_best is None and found["rf"].accuracy is not None
    assert found["mixed"].missing == "1 of 2 runs logged no predictions" and found["mixed"].accuracy is None
    assert found["old"].missing == "no predictions logged" and found["old"].versus_best is None


def test_a_row_is_not_paired_with_a_best_row_without_predictions_or_on_other_covers() -> None:
    logged = {
        "old-0-1": None,
        "cnn-0-2": predictions(COVERS[:30], [True] * 30),
        "rf-0-3": predictions(COVERS[30:], [True] * 30),
    }
    rows, _ = result_rows(members_of(logged))
    quick = Bootstrap(resamples=2000)

    without_best = column_of(table_cells(rows, row_intervals(rows, logged, quick)), VERSUS)
    without_old = column_of(table_cells(rows[1:], row_intervals(rows[1:], logged, quick)), VERSUS)

    assert without_best == [
        "best",
        "n/a (the best row logged no predictions)",
        "n/a (the best row logged no predictions)",
    ]
    assert without_old == ["best", "n/a (not scored on the best row's covers)"]


def column_of(cells: list[list[str]], name: str) -> list[str]:
    return [row[TABLE_HEADER.index(name)] for row in cells]


VERSUS = "balanced accuracy vs best, points (95% interval; McNemar p of accuracy)"
STATIC, CROSS_VALIDATED = "genre-suite-covers-dev", "genre-suite-covers-dev-cv3"


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with a suite's runs made directly: cnn and rf with predictions, old without, two seeds each; and a
    3-fold cross-validated suite of cnn in an MLflow experiment of its own."""
    folder = tmp_path_factory.mktemp("scored")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        use_store(patch, uri, folder)
        for seed in (0, 1):
            scored_run(STATIC, "cnn", seed, predictions(COVERS, [i % 2 == 0 for i in range(60)]))
            rf = predictions(COVERS, [i % 2 == 0 or i % 4 == 1 for i in range(60)])
            scored_run(STATIC, "rf", seed, rf, stage="baseline")
            scored_run(STATIC, "old", seed, None, accuracy=0.3)
            for fold, test in enumerate(folds_of(COVERS, 3)):
                index = [COVERS.index(cover) for cover in test]
                found = predictions(test, [i % 2 == 0 for i in index])
                scored_run(CROSS_VALIDATED, "cnn", seed, found, folds=3, fold=fold)
    return uri


@pytest.fixture
def scored(scored_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """That store, reported on from a working folder of the test's own."""
    use_store(monkeypatch, scored_store, tmp_path)
    return scored_store


def rows_of(page: str) -> dict[str, dict[str, str]]:
    """The results table's rows by experiment, each a cell by column name."""
    lines = [line.strip("|").split(" | ") for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    header = [cell.strip() for cell in lines[0]]
    return {cells[1]: dict(zip(header, (cell.strip() for cell in cells), strict=True)) for cells in lines[1:]}


def test_the_page_shows_each_rows_intervals_the_method_and_which_rows_were_compared_unpaired(scored: str) -> None:
    assert main(["report", "-q", "--experiment", STATIC, "--output", "page.md"]) == 0

    page = Path("page.md").read_text()
    rows = rows_of(page)
    assert list(rows) == ["rf", "cnn", "old"]
    assert rows["rf"]["test accuracy %"] == "75.00 ± 0.00"
    assert rows["rf"]["test accuracy 95% interval"] == "63.3 to 86.7"
    assert rows["rf"][VERSUS] == "best"
    assert re.fullmatch(r"-25\.0 \(-\d+\.\d to -\d+\.\d; p < 0\.001\)", rows["cnn"][VERSUS])
    assert rows["old"]["test balanced accuracy 95% interval"] == "n/a (no predictions logged)"
    method = "95% interval: stratified bootstrap over covers (percentile method, resampled within each true genre), "
    assert method + "4,000 resamples, seed 23, of the test covers of each row's runs pooled" in page
    assert "\nn/a: the row's runs (some or all) logged no per-cover predictions" in page
    assert "Cross-validated rows" not in page

    assert main(["report", "-q", "--experiment", STATIC, "--output", "page.md", "--section", "covers-dev"]) == 0
    assert main(["report", "-q", "--experiment", STATIC, "--format", "html", "--output", "page.html"]) == 0

    sectioned = Path("page.md").read_text()
    assert sectioned.startswith(page) and sectioned.count("| 2 | cnn |") == 2
    html = Path("page.html").read_text()
    assert "<td>63.3 to 86.7</td>" in html and "<p>n/a: the row&#x27;s runs (some or all)" in html


def test_a_cross_validated_experiments_page_pools_the_folds_and_says_so(scored: str) -> None:
    assert main(["report", "-q", "--experiment", CROSS_VALIDATED, "--output", "cv.md"]) == 0

    page = Path("cv.md").read_text()
    (row,) = rows_of(page).values()
    assert row["seeds"] == "0,1 (3 folds)" and row["test accuracy %"] == "50.00 ± 0.00"
    assert row["test accuracy 95% interval"] == "38.3 to 61.7"  # 60 covers, each once per seed: not 20 a fold
    assert (
        "Cross-validated rows (3 folds x 1 repeat): a seed's validation numbers are the mean over its folds; its test "
        "numbers and the intervals are of the pooled out-of-fold predictions, every cover scored once per repeat and "
        "seed." in page
    )
