"""The MLflow UI in a real headless Chromium, against a real tracking server holding genre's runs.

Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run; `apt-get install chromium
chromium-driver` locally). Screenshots go to $GENRE_SCREENSHOTS (docs/img/ holds the committed ones).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from tests.tracking.test_server import running_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
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
def server_with_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with running_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, monkeypatch) as url:
        yield fill(url, tmp_path)


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


def show(driver, url: str, texts: list[str], screenshot: str, timeout: float = 180) -> None:
    """Open `url`, wait until every text is on the page, save a screenshot."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def page(d) -> str:
        return d.find_element("tag name", "body").text

    driver.get("about:blank")  # a real navigation each time, not only a change of the URL's fragment
    driver.get(url)
    try:
        WebDriverWait(driver, timeout).until(lambda d: all(text in page(d) for text in texts))
    except TimeoutException:
        raise AssertionError(f"{url} never showed all of {texts}; it shows: {page(driver)[:800]!r}") from None
    folder = Path(os.environ.get("GENRE_SCREENSHOTS", "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / screenshot))


@pytest.mark.slow
def test_the_ui_shows_the_runs_the_metric_charts_and_the_study_with_its_trials(server_with_runs: str, browser) -> None:
    client = MlflowClient(server_with_runs)
    experiment = client.get_experiment_by_name("genre-digits")
    runs = {r.data.tags["genre.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    base = f"{server_with_runs}/#/experiments/{experiment.experiment_id}"

    show(browser, f"{base}/runs", ["prepare", "train-convnet", "tune-ui"], "runs.png")
    train = runs["train"].info.run_id
    show(
        browser,
        f"{base}/runs/{train}/model-metrics",
        ["train-convnet", "best_val_accuracy", "best_val_balanced_accuracy"],  # charts render as they scroll in view
        "train-run.png",
    )
    tune = runs["tune"].info.run_id
    show(
        browser,
        f"{base}/runs/{tune}",
        ["tune-ui", "Child runs", "trial-0", "trial-1", "best_model_uri"],
        "tune-run.png",
    )
    trial = next(r for r in client.search_runs([experiment.experiment_id], "tags.trial_number = '0'"))
    show(
        browser,
        f"{base}/runs/{trial.info.run_id}/model-metrics",
        ["trial-0", "best_val_accuracy", "best_val_macro_f1"],
        "trial-run.png",
    )
