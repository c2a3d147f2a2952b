"""A feature baseline is a cover model: logged with its run, it scores real covers through `mlflow models predict`
exactly as the run scored them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.errors import ConfigError
from tests.conftest import PROJECT_ROOT

COVERS_DEV = PROJECT_ROOT.parent / "shared" / "data" / "covers-dev"
GENRES = ("classical", "jazz", "metal")
needs_covers = pytest.mark.skipif(not COVERS_DEV.is_dir(), reason=f"the shared real covers are not at {COVERS_DEV}")


@needs_covers
@pytest.mark.slow
def test_mlflow_models_predict_scores_real_covers_as_the_feature_baseline_s_run_did(
    tracking_store: str, tmp_path: Path
) -> None:
    folder = tmp_path / "real-covers"
    for genre in GENRES:
        (folder / genre).mkdir(parents=True)
        for cover in sorted((COVERS_DEV / genre).glob("*.jpg"))[:14]:
            shutil.copy(cover, folder / genre / cover.name)  # into the test's own folder, never the repository
    assert main(["prepare", "-q", "--folder", str(folder), "--out", "covers-96", "--image-size", "96"]) == 0
    settings = ["--model", "logreg", "--features", "network", "--network", "efficientnet_lite0", "--pretrained",
                "true", "--style-blocks", "2", "--views", "mirror", "--class-weight", "balanced"]  # fmt: skip
    assert main(["baseline", "-q", "--data", "covers-96", *settings]) == 0

    client = MlflowClient(tracking_store)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`genre.stage` = 'baseline'"
    )
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path)))
    (tmp_path / "paths.csv").write_text("path\n" + "\n".join(str(folder / key) for key in logged["cover"]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_RUN")}
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", f"runs:/{run.info.run_id}/model",
               "-i", "paths.csv", "-t", "csv", "--env-manager", "local", "-o", "scored.json"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env | {"MLFLOW_TRACKING_URI": tracking_store},
                          capture_output=True, text=True, timeout=600)  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.DataFrame(pd.read_json(tmp_path / "scored.json")["predictions"].tolist())
    columns = [f"p_{genre}" for genre in GENRES]
    assert list(scored["genre"]) == list(logged["predicted"])
    np.testing.assert_allclose(scored[columns].to_numpy(), logged[columns].to_numpy(), atol=1e-4)


@pytest.mark.parametrize("model", ["rf", "svm"])
def test_a_forest_or_an_svm_on_features_is_logged_as_a_model_that_scores_as_its_run_did(
    tracking_store: str, tmp_path: Path, model: str
) -> None:
    from genre.cover_model import load_cover_model
    from genre.data.pack import open_pack

    assert main(["prepare", "-q"]) == 0  # the bundled digits, 32 px
    settings = ["--model", model, "--features", "network", "--network", "efficientnet_lite0", "--pretrained", "true",
                "--style-blocks", "1", "--variant", "dev", "--trees", "30"]  # fmt: skip
    assert main(["baseline", "-q", *settings]) == 0

    client = MlflowClient(tracking_store)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`genre.stage` = 'baseline'"
    )
    logged = pd.read_csv(
        client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path)), dtype={"predicted": str}
    )
    pack = open_pack(tmp_path / "data/prepared/digits-32", "dev", "test")
    classifier = load_cover_model(f"runs:/{run.info.run_id}/model").unwrap_python_model()
    scored = classifier.predict(None, np.ascontiguousarray(pack.images))

    assert list(pack.files) == list(logged["cover"])
    assert list(scored["genre"]) == list(logged["predicted"])
    columns = [column for column in logged.columns if column.startswith("p_")]
    assert len(columns) == 10  # the SVM's calibrated margins too
    np.testing.assert_allclose(scored[columns].to_numpy(), logged[columns].to_numpy(), atol=1e-4)
    if model == "svm":
        assert run.data.metrics["chosen_svm_temperature"] > 0
    else:
        with pytest.raises(ConfigError, match="random forest"):
            classifier.explainer()
