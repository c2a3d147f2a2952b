"""`genre report`: the results of a suite, or of any MLflow experiment's train, trial and baseline runs (those of a
dataset, `genre-digits`, say), read back from the tracking store as a Markdown or HTML page with figures.

The numbers are never typed: every cell comes from the runs' metrics and per-cover predictions (the 95% intervals and
the paired differences from each table's best row, `genre.stages.pooling`). The page and its figures are also
logged as the artifacts of a `report` run in the same MLflow experiment. A Markdown report can also be one marked
section of a page (`--section`), so one page holds several suites' results: see `write_report`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import re
from dataclasses import dataclass
from pathlib import Path

from genre.command_config import SECTION_NAME, ReportConfig
from genre.disk import check_output_file
from genre.errors import EXIT_OK, ConfigError, DataError, TrackingError
from genre.figures import accuracy_bars, close_figure, overlaid_curves
from genre.intervals import BOOTSTRAP, Bootstrap, accuracy_intervals
from genre.predictions import CoverPredictions
from genre.stages.pooling import pool, pooled_comparison
from genre.stages.report_table import (
    NETWORK_STAGES,
    NO_PREDICTIONS,
    TABLE_HEADER,
    MemberRun,
    ResultRow,
    RowIntervals,
    by_data,
    member_run,
    result_rows,
    shown_test,
    table_cells,
)
from genre.tracking import runs
from genre.tracking.tracker import tracked_run

ACCURACY, CURVES, CONFUSION = "accuracy.png", "learning_curves.png", "confusion_best.png"
SECTION_BEGIN, SECTION_END = "<!-- genre report --section {}: begin -->", "<!-- genre report --section {}: end -->"
MARKED_SECTION = re.compile(  # a whole marked section, markers included, of any name
    "^"
    + re.escape(SECTION_BEGIN).replace(re.escape("{}"), f"({SECTION_NAME.pattern})")
    + r"\r?\n.*?^"
    + re.escape(SECTION_END).replace(re.escape("{}"), r"\1")
    + r"(?:\r?\n|\Z)",
    re.MULTILINE | re.DOTALL,
)
EXPLANATION = (
    "Validation accuracy is the best epoch's for networks (the epoch whose model is kept and tested) and the fitted "
    "model's for baselines; test accuracy is that model on the test split. Balanced accuracy is the mean of the "
    "per-genre recalls, which a large genre does not dominate. Mean ± sample standard deviation over seeds, best first "
    "by validation balanced accuracy (by validation accuracy in a table with runs that predate it, shown as '-'), one "
    "table per dataset variant (their validation splits differ)."
)
UNPAIRED_NOTE = (
    "n/a: the row's runs (some or all) logged no per-cover predictions, being older than them, so the row has no "
    "interval and was compared with the other rows unpaired, by the means ± std over seeds alone."
)


@dataclass
class Report:
    """What was written: the page, its figures, and the rows it shows."""

    experiment: str
    page: Path
    figures: dict[str, Path]
    rows: list[ResultRow]
    left_out: int
    section: str = ""  # the page section it was written as; "" for a whole page
    intervals: list[RowIntervals] | None = None  # each row's, in the order of `rows`
    bootstrap: Bootstrap = BOOTSTRAP


def _figures(rows: list[ResultRow], intervals: list[RowIntervals], folder: Path) -> dict[str, Path]:
    """The accuracy chart (with each row's test interval), the overlaid learning curves (networks) and the best run's
    test confusion matrix."""

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    found = {id(row): interval for row, interval in zip(rows, intervals, strict=True)}
    rows = [row for _, table in by_data(rows) for row in table]  # in the tables' order: full first
    labels = [f"{row.first.name} ({row.first.variant})" for row in rows]
    chance = next((1 / row.first.classes for row in rows if row.first.classes), None)
    test = [shown_test(row, found[id(row)])[0] for row in rows]
    test_intervals = [found[id(row)].accuracy for row in rows]
    figures = {ACCURACY: accuracy_bars(labels, [row.val for row in rows], test, chance, test_intervals)}
    curves = {
        label: [runs.metric_history(run.run_id, "val_accuracy") for run in row.runs]
        for label, row in zip(labels, rows, strict=True)
        if row.first.kind in NETWORK_STAGES
    }
    if curves:
        figures[CURVES] = overlaid_curves(curves, "validation accuracy")
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110)
        close_figure(figure)
        made[name] = folder / name
    best = best_run(rows)
    confusion = runs.download(best.run_id, "confusion_test.png", folder / ".download")
    if confusion:
        made[CONFUSION] = confusion.replace(folder / CONFUSION)
        (folder / ".download").rmdir()
    return made


def best_run(rows: list[ResultRow]):
    """The best run of the first table (the first dataset's full variant, where validation is largest)."""
    return by_data(rows)[0][1][0].best_run


def wall_time(seconds: float) -> str:
    """'2 h 05 min', '14 min', '45 s': a duration as a reader compares them, to the minute above a minute."""
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _intro(report: Report, generated: str) -> list[str]:
    shown = [run for row in report.rows for run in row.runs]
    left = f" ({report.left_out} runs of older versions of changed experiments left out)" if report.left_out else ""
    took = wall_time(sum(run.seconds for run in shown))
    if len(shown) == 1:
        took_line = f"The run took {took} of wall time."
    else:
        took_line = f"The {len(shown)} runs took {took} of wall time in all, one after another."
    return [
        f"Generated by `genre report --experiment {report.experiment}` on {generated} from {len(shown)} finished runs "
        f"of {len(report.rows)} experiments in the tracking store {runs.shown_store()}{left}. {took_line}",
        EXPLANATION,
        method(report),
    ]


def method(report: Report) -> str:
    """How the intervals and the comparisons with the best row were computed, as the page states it."""
    text = (
        f"{report.bootstrap.describe()}, of the test covers of each row's runs pooled (a cover's correctness is the "
        "share of the row's runs that got it right, so each cover counts once). 'vs best' is the row's balanced "
        "accuracy minus its table's first row's, in points, on the test covers both scored, with the paired "
        "bootstrap interval (a resampled cover brings both rows' outcomes along) and McNemar's exact p on each "
        "row's per-cover majority vote (an even split of its runs counts for neither)."
    )
    folds = sorted({(row.folds, row.repeats) for row in report.rows if row.folds})
    if folds:
        shapes = ", ".join(f"{k} folds x {r} repeat{'s' if r > 1 else ''}" for k, r in folds)
        text += (
            f" Cross-validated rows ({shapes}): a seed's validation numbers are the mean over its folds; its test "
            "numbers and the intervals are of the pooled out-of-fold predictions, every cover scored once per "
            "repeat and seed."
        )
    return text


def _unpaired_note(rows: list[ResultRow], report: Report) -> list[str]:
    """The footnote under a table with rows that have no interval."""
    found = _table_intervals(rows, report) or [None] * len(rows)
    return [] if all(interval and interval.accuracy is not None for interval in found) else [UNPAIRED_NOTE]


def _best_line(report: Report) -> str:
    best = best_run(report.rows)
    balanced = ""
    if best.val_balanced_accuracy is not None and best.test_balanced_accuracy is not None:
        balanced = (
            f" (balanced: validation {100 * best.val_balanced_accuracy:.2f}%, "
            f"test {100 * best.test_balanced_accuracy:.2f}%)"
        )
    fold = ""
    if best.folds:  # a cross-validated row: its best run saw one fold, the table pools them all
        fold = f" fold {best.fold + 1} of {best.folds} (the table pools every fold; this run's test is its fold alone)"
    return (
        f"Best run: {best.name} seed {best.seed}{fold} (run {best.run_id}), validation {100 * best.val_accuracy:.2f}%, "
        f"test {100 * best.test_accuracy:.2f}%{balanced}."
    )


def _title(report: Report) -> str:
    suites = sorted({run.suite for row in report.rows for run in row.runs if run.suite})
    if not suites:
        return f"Results of MLflow experiment {report.experiment}"
    return f"Results of suite {', '.join(suites)} (MLflow experiment {report.experiment})"


def _table_intervals(rows: list[ResultRow], report: Report) -> list[RowIntervals] | None:
    """The intervals of one table's rows, in their order."""
    if report.intervals is None:
        return None
    found = {id(row): interval for row, interval in zip(report.rows, report.intervals, strict=True)}
    return [found[id(row)] for row in rows]


def render_markdown(report: Report, generated: str) -> str:
    """The page, or with `report.section` the section: its headings one level deeper, under the page's own title."""
    title, heading = ("##", "###") if report.section else ("#", "##")
    lines = [f"{title} {_title(report)}", ""]
    for paragraph in _intro(report, generated):
        lines += [paragraph, ""]
    lines.pop()
    for data, rows in by_data(report.rows):
        lines += ["", f"{heading} {data}", ""]
        lines.append("| " + " | ".join(TABLE_HEADER) + " |")
        lines.append("|" + "|".join("---" for _ in TABLE_HEADER) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table_cells(rows, _table_intervals(rows, report))]
        lines += [line for note in _unpaired_note(rows, report) for line in ("", note)]
    captions = {
        ACCURACY: "Accuracy per experiment",
        CURVES: "Validation accuracy per epoch",
        CONFUSION: "Test confusion matrix of the best run",
    }
    lines += ["", f"{heading} Figures", ""]
    for name, caption in captions.items():
        if name in report.figures:
            if name == CONFUSION:
                lines += [_best_line(report), ""]
            lines += [f"![{caption}]({report.figures[name].relative_to(report.page.parent).as_posix()})", ""]
    return "\n".join(lines)


def section_markers(section: str) -> tuple[str, str]:
    """The lines that begin and end section `section` of a page (HTML comments: not shown)."""
    return SECTION_BEGIN.format(section), SECTION_END.format(section)


def with_section(text: str, section: str, body: str, where: str) -> str:
    """`text` (a page; "" for none yet) with `body` as its section `section`: the lines between the section's markers
    are replaced, or the section with its markers is appended. Every other byte of `text` is kept."""
    begin, end = section_markers(section)
    lines = text.splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    inner = "\n" + body.rstrip("\n") + "\n\n"
    if begin not in bare:
        separator = "\n" if text.endswith("\n") else "\n\n" if text else ""
        return f"{text}{separator}{begin}\n{inner}{end}\n"
    start = bare.index(begin)
    if end not in bare[start + 1 :]:
        raise ConfigError(f"{where} line {start + 1}: section '{section}' begins but never ends; add the line '{end}'")
    stop = bare.index(end, start + 1)
    return "".join(lines[: start + 1]) + inner + "".join(lines[stop:])


def with_kept_sections(old: str, page: str) -> str:
    """A regenerated whole `page` followed by the marked sections of the `old` file, unchanged, in their order."""
    kept = [match.group(0) for match in MARKED_SECTION.finditer(old)]
    return page + "".join("\n" + (block if block.endswith("\n") else block + "\n") for block in kept)


def _embedded(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    image = f'<img src="data:image/png;base64,{data}" alt="{caption}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _html_row(cells: list[str]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def render_html(report: Report, generated: str) -> str:
    """A standalone page: the figures are embedded, so the file can be mailed or logged alone."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in TABLE_HEADER)
    tables = "".join(
        f"<h2>{html.escape(data)}</h2><table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(_html_row(row) for row in table_cells(rows, _table_intervals(rows, report)))
        + "</tbody></table>"
        + "".join(f"<p>{html.escape(note)}</p>" for note in _unpaired_note(rows, report))
        for data, rows in by_data(report.rows)
    )
    captions = {ACCURACY: "Accuracy per experiment", CURVES: "Validation accuracy per epoch"}
    figures = [_embedded(report.figures[name], caption) for name, caption in captions.items() if name in report.figures]
    if CONFUSION in report.figures:
        figures += [f"<p>{html.escape(_best_line(report))}</p>", _embedded(report.figures[CONFUSION], "Best run")]
    intro = "".join(f"<p>{html.escape(text)}</p>" for text in _intro(report, generated))
    title = html.escape(_title(report))
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body><h1>{title}</h1>{intro}{tables}<h2>Figures</h2>"
        f"{''.join(figures)}</body></html>\n"
    )


def write_report(config: ReportConfig) -> Report:
    """Read the experiment's runs, write the page and its figures, and return what was written.

    With `config.section` the Markdown goes between that section's marker lines of `config.output` (appended if the
    file has none, the file made if missing), headings one level down, figures in `<stem>/<section>/`; the rest of
    the file is kept byte for byte. Without it the whole page is rewritten, but the marked sections the file held
    are kept, after the page and unchanged, so regenerating the page does not drop another suite's section.
    """
    if config.output:  # before the runs are read and the figures drawn
        check_output_file(Path(config.output), "report", "--output")
    experiment = config.experiment or newest_suite_experiment()
    if not experiment:
        raise TrackingError(f"no suite runs at {runs.shown_store()}; run `genre suite` first, or name --experiment")
    rows, left_out = result_rows(experiment_members(experiment))
    if not rows:
        raise TrackingError(
            f"MLflow experiment '{experiment}' has no finished train, trial or baseline run with test metrics yet; "
            "run `genre train`, `genre baseline` or `genre suite`"
        )
    page = Path(config.output or f"reports/{experiment}.{config.format}")
    page.parent.mkdir(parents=True, exist_ok=True)
    folder = page.parent / page.stem / config.section if config.section else page.parent / page.stem
    intervals = row_intervals(rows, logged_predictions(rows))
    report = Report(experiment, page, _figures(rows, intervals, folder), rows, left_out, config.section, intervals)
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if config.format == "html":
        page.write_text(render_html(report, generated))
        return report
    old = page.read_bytes().decode() if page.exists() else ""  # bytes: keep the file's own line endings
    markdown = render_markdown(report, generated)
    if config.section:
        page.write_bytes(with_section(old, config.section, markdown, str(page)).encode())
    else:
        page.write_bytes(with_kept_sections(old, markdown).encode())
    return report


def logged_predictions(rows: list[ResultRow]) -> dict[str, CoverPredictions | None]:
    """Each run's test predictions, by run id; None for a run that logged none."""
    return {run.run_id: runs.logged_predictions(run.run_id) for row in rows for run in row.runs}


def row_intervals(
    rows: list[ResultRow], predictions: dict[str, CoverPredictions | None], bootstrap: Bootstrap = BOOTSTRAP
) -> list[RowIntervals]:
    """Each row's test intervals from its runs' pooled predictions, and its paired difference from its table's first
    (best) row, in the order of `rows`. A row any of whose runs lacks predictions gets none: pooling only some of its
    seeds would describe another model than its means do."""
    found: dict[int, RowIntervals] = {}
    logged: dict[int, list[CoverPredictions]] = {}
    for row in rows:
        mine = [predictions.get(run.run_id) for run in row.runs]
        lacking = sum(prediction is None for prediction in mine)
        if lacking:
            why = NO_PREDICTIONS if lacking == len(mine) else f"{lacking} of {len(mine)} runs logged no predictions"
            found[id(row)] = RowIntervals(missing=why)
            continue
        logged[id(row)] = [prediction for prediction in mine if prediction is not None]
        pooled = pool(logged[id(row)])
        accuracies = accuracy_intervals(pooled.correct, pooled.genres, bootstrap)
        seeds = [pool([p for run, p in zip(row.runs, mine, strict=True) if run.seed == seed]) for seed in row.seeds]
        found[id(row)] = RowIntervals(
            accuracies.accuracy,
            accuracies.balanced_accuracy,
            accuracies.covers,
            per_seed_accuracy=[seed.accuracy for seed in seeds],
            per_seed_balanced_accuracy=[seed.balanced_accuracy for seed in seeds],
        )
    for _, table in by_data(rows):
        best = logged.get(id(table[0]))
        for row in table[1:]:
            if id(row) in logged:
                found[id(row)] = _versus_best(found[id(row)], best, logged[id(row)], bootstrap)
    return [found[id(row)] for row in rows]


def _versus_best(
    found: RowIntervals, best: list[CoverPredictions] | None, mine: list[CoverPredictions], bootstrap: Bootstrap
) -> RowIntervals:
    """`found` with the row's paired difference from its table's best row (`best`: that row's predictions, None if
    it logged none), or with why there is none."""
    if best is None:
        return dataclasses.replace(found, versus_best_missing="the best row logged no predictions")
    try:
        return dataclasses.replace(found, versus_best=pooled_comparison(best, mine, bootstrap))
    except DataError:  # no cover in common, or covers whose genre differs: other data
        return dataclasses.replace(found, versus_best_missing="not scored on the best row's covers")


def experiment_members(experiment: str) -> list[MemberRun]:
    """The FINISHED train, trial and baseline runs of MLflow experiment `experiment` (by name): a suite's members,
    or any other such runs."""
    try:
        experiment_id = runs.experiment_id(experiment)
    except TrackingError as error:
        raise TrackingError(f"{error}; run `genre suite` first, or name one with --experiment") from None
    finished = runs.search([experiment_id], "attributes.status = 'FINISHED'")
    return [member for member in map(member_run, finished) if member is not None]


def newest_suite_experiment() -> str | None:
    """The MLflow experiment of the most recently started suite run, if any."""
    newest = runs.search(None, "tags.`genre.stage` = 'suite'", newest_first=True, max_results=1)
    return runs.experiment_names().get(newest[0].info.experiment_id) if newest else None


def command(config: ReportConfig) -> int:
    """`genre report`: the results page of an experiment, written to a file and logged as a run's artifacts."""
    report = write_report(config)
    with tracked_run(report.experiment, "report", {"genre.stage": "report"}) as tracker:
        tracker.log_params(
            {"config.format": config.format, "config.section": config.section, "experiments_shown": len(report.rows)}
        )
        tracker.log_artifact(report.page, "report")
        for figure in report.figures.values():  # where the page links them: beside it, as in the file tree
            folder = figure.parent.relative_to(report.page.parent).as_posix()
            tracker.log_artifact(figure, f"report/{folder}")
    best = best_run(report.rows)
    section = f", section {config.section}," if config.section else ""
    print(
        f"wrote {report.page}{section} ({len(report.rows)} experiments, {len(report.figures)} figures); "
        f"best: {best.name} on {best.dataset}/{best.variant} at {100 * best.val_accuracy:.2f}% validation"
    )
    print(f"MLflow run {tracker.run_id} at {tracker.store} holds the report")
    return EXIT_OK
