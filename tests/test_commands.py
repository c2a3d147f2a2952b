"""The commands of `genre.commands` that own no run (`genre clean`, `genre demo-end`), as a user runs them, checked in
a real SQLite tracking store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main


def test_clean_removes_the_checkpoints_of_finished_runs_only(tracking_store: str, capsys) -> None:
    client = MlflowClient(tracking_store)
    experiment = client.create_experiment("genre-covers")
    folders = {}
    for status in ("FINISHED", "KILLED", "FAILED", "RUNNING", "FINISHED"):
        run_id = client.create_run(experiment).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        folder = Path("checkpoints") / run_id
        folder.mkdir(parents=True)
        (folder / "state.json").write_text("{}")
        (folder / "best.params").write_bytes(bytes(2**20))
        folders[run_id] = (status, folder)
    elsewhere = Path("checkpoints") / ("0" * 32)  # a run of another tracking store
    elsewhere.mkdir()
    notes = Path("checkpoints") / "notes"  # not a run's folder at all
    notes.mkdir()

    assert main(["clean", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "would remove the checkpoints of 2 FINISHED run(s) from checkpoints: 2.0 MB" in said
    assert all(folder.exists() for _, folder in folders.values())

    assert main(["clean"]) == 0
    said = capsys.readouterr().out
    assert "removed the checkpoints of 2 FINISHED run(s) from checkpoints: 2.0 MB" in said
    assert "kept 4: 1 FAILED, 1 KILLED, 1 RUNNING, 1 unknown" in said and "genre train --resume RUN_ID" in said
    assert {status for status, folder in folders.values() if folder.exists()} == {"KILLED", "FAILED", "RUNNING"}
    assert elsewhere.exists() and notes.exists()


def test_clean_without_a_tracking_store_removes_nothing_and_makes_no_store(tracking_store: str, capsys) -> None:
    (Path("checkpoints") / ("a" * 32)).mkdir(parents=True)
    assert main(["clean"]) == 0
    assert "nothing to remove: the tracking store" in capsys.readouterr().out
    assert (Path("checkpoints") / ("a" * 32)).exists() and not Path("mlflow.db").exists()


@pytest.mark.slow
def test_the_demos_end_prints_a_predict_command_that_works_and_the_experiments_ui_address(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    import shlex

    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    prepare(PrepareConfig(out="digits16", image_size=16), progress=False)
    small = ["--epochs", "1", "--conv-filters", "8", "--dense-units", "", "--batch-size", "128"]
    assert main(["train", "-q", "--data", "digits16", *small]) == 0
    capsys.readouterr()

    assert main(["demo-end"]) == 0

    said = capsys.readouterr().out.splitlines()
    experiment = MlflowClient(tracking_store).get_experiment_by_name("genre-digits").experiment_id
    assert said[1].endswith(
        f"ui --backend-store-uri {tracking_store}   # then open "
        f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"  # the Model training view
    )
    command = shlex.split(said[3])
    (run,) = MlflowClient(tracking_store).search_runs([experiment], "tags.`genre.stage` = 'train'")
    assert command[1:4] == ["predict", "--model-uri", f"runs:/{run.info.run_id}/model"]
    image = Path(command[4])
    assert image.parent.parent == Path("digits16/images") and f"genre {image.parent.name}:" in said[2]
    assert main(command[1:]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


def test_a_covers_example_cover_file_is_its_source_file_or_else_its_packed_pixels(unbalanced_covers: Path) -> None:
    import shutil

    from PIL import Image

    from genre.commands import example_cover_file
    from genre.data.pack import DatasetInfo, open_pack

    info = DatasetInfo.read(unbalanced_covers)
    image, genre = example_cover_file(unbalanced_covers, info, "full")
    assert image == Path(info.source.removeprefix("file://")) / info.files["full/test"][0] and image.is_file()
    shutil.rmtree(image.parent.parent)  # the source folder moved away

    image, genre = example_cover_file(unbalanced_covers, info, "full")
    assert image.parent == unbalanced_covers / "examples" and genre == info.files["full/test"][0].split("/")[0]
    pixels = np.asarray(Image.open(image))
    assert np.array_equal(pixels, open_pack(unbalanced_covers, "full", "test").images[0])
