"""Refusals before work leave nothing behind, and names are names (issue 25, cases 5 and 6): no run, no experiment,
no folder, one line naming what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from genre.cli import main
from tests.conftest import write_cover_folder


def nothing_made() -> None:
    assert not Path("mlflow.db").exists()  # no run, no experiment
    assert not Path("data").exists()  # no dataset folder


def test_a_folder_that_is_not_there_is_one_line_and_makes_nothing(tracking_store: str, capsys) -> None:
    assert main(["prepare", "-q", "--folder", "/nonexistent"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "genre prepare: error: image folder /nonexistent does not exist; pass --folder ROOT laid out "
        "ROOT/<genre>/<file>\n"
    )
    nothing_made()


def test_a_file_given_as_the_folder_is_called_a_file(tracking_store: str, tmp_path: Path, capsys) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n")
    assert main(["prepare", "-q", "--folder", str(file)]) == 2
    assert capsys.readouterr().err.startswith(f"genre prepare: error: --folder {file} is a file, not a folder; ")
    nothing_made()


@pytest.mark.parametrize("name", ["/abs/evil", "../../../x", "a/b"])
def test_a_name_is_never_a_path(tracking_store: str, tmp_path: Path, name: str, capsys) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=2, per_genre=4, size=16)
    assert main(["prepare", "-q", "--folder", str(folder), "--name", name]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre prepare: error: 'name' is a dataset's name, not a path: ") and name in error
    nothing_made()
    assert not Path("/abs").exists()


def test_a_crop_larger_than_the_images_names_crop_size_before_a_run_opens(tracking_store: str, tmp_path: Path,
                                                                          capsys) -> None:  # fmt: skip
    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    root = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    assert main(["train", "-q", "--data", str(root), "--crop-size", "100"]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"genre train: error: 'crop_size' 100 is larger than the 16-px images of {root}; use at most 16 (0: the "
        "network's own side where the images allow)\n"
    )
    assert not Path("mlflow.db").exists()


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["predict", "--model-uri", "runs:/deadbeef/model", "--output", "taken", "cover.jpg"], "predictions"),
        (["report", "--experiment", "genre-suite-digits", "--output", "taken"], "report"),
    ],
    ids=["predict", "report"],
)
def test_an_output_that_is_a_folder_is_refused_before_the_work(tracking_store: str, command: list[str], what: str,
                                                               capsys) -> None:  # fmt: skip
    """It used to fail with `IsADirectoryError` once all the work was done."""
    Path("taken").mkdir()
    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"genre {command[0]}: error: --output taken is a folder; give the {what} a file name (a new file in it, say)\n"
    )


def test_serving_a_model_that_is_not_there_is_one_line_before_the_server_starts(tracking_store: str, capsys) -> None:
    """It used to print "serving ..." and then MLflow's 48-line traceback."""
    assert main(["serve", "--model-uri", "runs:/deadbeef/model", "--port", "5999"]) == 2
    captured = capsys.readouterr()
    assert captured.err.endswith(f"\ngenre serve: error: MLflow at {tracking_store}: Run with id=deadbeef not found\n")
    assert "serving" not in captured.out
