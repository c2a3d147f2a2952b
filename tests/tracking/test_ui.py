"""The MLflow UI in a real headless Chromium, against a real tracking server holding genre's runs, opened at the
addresses genre prints (`genre.tracking.ui`): each must open in MLflow's Model training view, not its GenAI view.

Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run; `apt-get install chromium
chromium-driver` locally). Screenshots go to $GENRE_SCREENSHOTS (docs/img/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.tracking.ui import ui_address
from tests.processes import wait_for
from tests.tracking.test_tracking_server import running_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
STARTED_IN = Path.cwd()  # the tests chdir into their tmp_path; a relative $GENRE_SCREENSHOTS counts from here
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("GENRE_REQUIRE_BROWSER"),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def server_with_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[str]:
    """A server holding a first session's runs; what the commands printed is in `capsys` (requested here so that it
    captures them)."""
    with running_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, monkeypatch) as url:
        yield fill(url, tmp_path)


def printed_pages(output: str) -> dict[str, str]:
    """The UI page of each run a command printed ("run NAME in the MLflow UI: ADDRESS"), by run name; MLflow's own
    lines ("View run NAME at: ...", whose address opens the GenAI view) must not be there."""
    assert "View run" not in output and "View experiment" not in output, output
    found = [line.split(" in the MLflow UI: ") for line in output.splitlines() if " in the MLflow UI: " in line]
    return {name.removeprefix("run "): address for name, address in found}


def tab(page: str, name: str) -> str:
    """The tab `name` of the run page `page`, with the page's query (`model-metrics`, `artifacts/PATH`)."""
    route, query = page.split("?", 1)
    return f"{route}/{name}?{query}"


def fill(url: str, tmp_path: Path) -> str:
    """What a user has after a first session: a prepared dataset, a training run and a small study."""
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
    assert main(["train", "-q", "--data", "digits16", "--epochs", "3", "--conv-filters", "8,16"]) == 0
    space = tmp_path / "space.yaml"
    space.write_text(
        "settings: {data: digits16, epochs: 2, conv_filters: '8'}\n"
        "parameters:\n  learning_rate: {float: [0.005, 0.05], log: true}\n"
    )
    assert main(["tune", "-q", "--space", str(space), "--study", "ui", "--n-trials", "2"]) == 0
    return url


def sidebar(driver) -> str:
    return driver.execute_script("const side = document.querySelector('aside'); return side ? side.innerText : ''")


def show(
    driver,
    url: str,
    texts: list[str],
    screenshot: str | None,
    timeout: float = 180,
    ready: Callable[[object], bool] | None = None,
    arrange: Callable[[object], None] | None = None,
) -> None:
    """Open `url`, wait until every text is on the page (and `ready(driver)` holds: an image loaded, say), check that
    it is MLflow's Model training view, let `arrange(driver)` scroll what the screenshot should show into view, save
    the screenshot (None: none)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def page(d) -> str:
        return d.find_element("tag name", "body").text

    driver.get("about:blank")  # a real navigation each time, not only a change of the URL's fragment
    driver.get(url)
    try:
        WebDriverWait(driver, timeout).until(
            lambda d: all(text in page(d) for text in texts) and (ready is None or ready(d))
        )
    except TimeoutException:
        waited = f"all of {texts}" + (" and ready" if ready is not None else "")
        raise AssertionError(f"{url} never showed {waited}; it shows: {page(driver)[:800]!r}") from None
    # The Model training view's sidebar links the model registry; the GenAI view's lists judges, prompts, sessions.
    links = sidebar(driver)
    assert "Model registry" in links and "Judges" not in links, f"{url} opened the GenAI view: {links!r}"
    if arrange is not None:
        arrange(driver)
    if screenshot is None:
        return
    folder = STARTED_IN / os.environ["GENRE_SCREENSHOTS"] if "GENRE_SCREENSHOTS" in os.environ else Path("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / screenshot))


@pytest.mark.slow
def test_the_addresses_genre_prints_open_the_runs_the_metric_charts_and_the_study_in_the_model_training_view(
    server_with_runs: str, browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pages = printed_pages(capsys.readouterr().out)  # what prepare, train and tune printed
    assert set(pages) == {"prepare", "train-convnet", "tune-ui"}  # a study's trials are listed on its page
    client = MlflowClient(server_with_runs)
    experiment = client.get_experiment_by_name("genre-digits")
    runs = {r.data.tags["genre.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    for stage, name in (("prepare", "prepare"), ("train", "train-convnet"), ("tune", "tune-ui")):
        assert pages[name] == ui_address(server_with_runs, experiment.experiment_id, runs[stage].info.run_id)
    assert main(["demo-end"]) == 0
    experiment_page = capsys.readouterr().out.splitlines()[1].strip()
    assert experiment_page == ui_address(server_with_runs, experiment.experiment_id)
    log = tmp_path / "server.log"
    wait_for(lambda: "MLflow UI at " in log.read_text(), "genre server's ready line", 240)
    home = log.read_text().split("MLflow UI at ", 1)[1].split(" ", 1)[0]
    hide_assistant(browser, server_with_runs)

    show(browser, home, ["genre-digits"], None)
    show(browser, experiment_page, ["prepare", "train-convnet", "tune-ui"], "runs.png")
    show(
        browser,
        tab(pages["train-convnet"], "model-metrics"),
        ["train-convnet", "best_val_accuracy", "best_val_balanced_accuracy"],  # charts render as they scroll in view
        "train-run.png",
    )
    show(browser, pages["tune-ui"], ["tune-ui", "Child runs", "trial-0", "trial-1", "best_model_uri"], "tune-run.png")
    trial = next(r for r in client.search_runs([experiment.experiment_id], "tags.trial_number = '0'"))
    show(
        browser,
        tab(ui_address(server_with_runs, experiment.experiment_id, trial.info.run_id), "model-metrics"),
        ["trial-0", "best_val_accuracy", "best_val_macro_f1"],
        "trial-run.png",
    )


INTERPRET_FILES = {  # what `genre interpret --calibrate` logs under interpret/ for the test split
    f"interpret/{name}"
    for name in (
        "heatmaps_right_test.png", "heatmaps_mistakes_test.png", "cover_map_test.png", "cover_map_test.csv",
        "neighbours_test.png", "confused_pairs_test.csv", "confused_pairs_test.png", "confusion_normalised_test.png",
        "reliability_test.png", "reliability_test_calibrated.png",
    )
}  # fmt: skip


def get(url: str) -> tuple[bytes, str]:
    """The body and content type of a plain HTTP GET, as any client of the server would send it."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read(), response.headers.get_content_type()


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def hide_assistant(driver, url: str) -> None:
    """MLflow 3's assistant panel opens on a first visit and takes a third of the width: close it as a user would
    once (the UI remembers that in localStorage)."""
    driver.get(f"{url}/")
    driver.execute_script(
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
    )


@pytest.mark.slow
def test_interpret_artifacts_come_through_the_rest_api_and_open_in_the_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], browser
) -> None:
    with running_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, monkeypatch) as url:
        assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
        assert main(["train", "-q", "--data", "digits16", "--epochs", "3", "--conv-filters", "8,16"]) == 0
        experiment = MlflowClient(url).get_experiment_by_name("genre-digits")
        (train,) = MlflowClient(url).search_runs([experiment.experiment_id], "tags.`genre.stage` = 'train'")
        run_id = train.info.run_id
        model_uri = f"runs:/{run_id}/model"
        capsys.readouterr()
        assert main(["interpret", "-q", "--model-uri", model_uri, "--data", "digits16", "--calibrate"]) == 0
        run_page = printed_pages(capsys.readouterr().out)["train-convnet"]  # interpret logged into the model's run
        assert run_page == ui_address(url, experiment.experiment_id, run_id)

        listing = json.loads(get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=interpret")[0])
        sizes = {entry["path"]: entry.get("file_size", 0) for entry in listing["files"]}
        assert INTERPRET_FILES <= set(sizes), sorted(INTERPRET_FILES - set(sizes))
        assert all(size > 0 for size in sizes.values()), sizes
        # the URL MLflow 3's artifact view fetches an image from (checked below in the browser)
        heatmaps, content_type = get(f"{url}/get-artifact?path=interpret/heatmaps_right_test.png&run_uuid={run_id}")
        assert content_type == "image/png" and heatmaps.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(heatmaps) == sizes["interpret/heatmaps_right_test.png"]
        width, height = struct.unpack(">II", heatmaps[16:24])  # the PNG's IHDR chunk

        run = json.loads(get(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}")[0])["run"]
        metrics = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
        assert run["info"]["status"] == "FINISHED"
        assert {"test_ece", "temperature", "val_ece_calibrated", "test_ece_calibrated"} <= set(metrics)
        assert metrics["temperature"] > 0
        models = post(f"{url}/api/2.0/mlflow/logged-models/search", {"experiment_ids": [experiment.experiment_id]})
        logged = {model["info"]["name"] for model in models["models"] if model["info"]["source_run_id"] == run_id}
        assert logged == {"model", "model_calibrated"}

        def heatmaps_shown(driver) -> bool:
            """The artifact view's <img> holds the grid's PNG (its natural size) and is laid out on the page."""
            return driver.execute_script(
                "return Array.from(document.images).some(i => i.complete && i.naturalWidth === arguments[0] "
                "&& i.naturalHeight === arguments[1] && i.getBoundingClientRect().height > 0)",
                width,
                height,
            )

        hide_assistant(browser, url)
        browser.set_window_size(1600, height + 500)  # the whole grid, without scrolling the viewer
        show(
            browser,
            tab(run_page, "artifacts/interpret/heatmaps_right_test.png"),
            ["train-convnet", *(path.removeprefix("interpret/") for path in INTERPRET_FILES)],
            "interpret-artifacts.png",
            ready=heatmaps_shown,
        )
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        image = [name for name in fetched if "heatmaps_right_test.png" in name]
        assert any("/get-artifact?" in name and run_id in name for name in image), image  # the URL fetched above

        def interpret_metrics_in_view(driver) -> None:
            """The metrics table scrolled to its end (where interpret's metrics are) and the logged models below."""
            driver.execute_script(
                "const leaf = text => Array.from(document.querySelectorAll('*')).filter("
                "  e => e.childElementCount === 0 && e.textContent.trim().startsWith(text)).pop();"
                "leaf('Metrics (').scrollIntoView({block: 'start'});"
                "leaf('test_ece_calibrated').scrollIntoView({block: 'nearest'});"
            )

        browser.set_window_size(1600, 1800)
        show(
            browser,
            run_page,
            ["train-convnet", "temperature", "val_ece_calibrated", "test_ece_calibrated", "model_calibrated"],
            "interpret-metrics.png",
            arrange=interpret_metrics_in_view,
        )
