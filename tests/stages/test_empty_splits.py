"""Empty or too-small splits are refused before any work (issue 25, case 4): they used to be accepted, and train and
baseline then crashed after training (an `IndexError`, a scikit-learn traceback) with a FAILED run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from tests.conftest import write_cover_folder


def test_a_split_fraction_of_zero_is_refused_before_anything_is_made(tracking_store: str, capsys) -> None:
    fractions = ["--train-fraction", "1", "--val-fraction", "0", "--test-fraction", "0"]
    assert main(["prepare", "-q", "--out", "no-val", *fractions]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre prepare: error: 'val_fraction' must be ") and error.count("\n") == 1
    assert "train, val and test each need covers" in error
    assert not Path("no-val").exists() and not Path("mlflow.db").exists()


@pytest.fixture
def no_dev_packs(tracking_store: str, tmp_path: Path) -> Path:
    folder = write_cover_folder(tmp_path / "six-genres", genres=3, per_genre=10, size=16)
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "packed"), image_size=16, dev_size=0, workers=1)
    return prepare(config, progress=False).root


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--epochs", "1", "--conv-filters", "4", "--dense-units", ""],
        ["baseline", "--model", "rf", "--trees", "5"],
    ],
    ids=["train", "baseline"],
)
def test_an_empty_variant_is_refused_before_a_run_opens(no_dev_packs: Path, command: list[str], capsys) -> None:
    assert main([*command, "-q", "--data", str(no_dev_packs), "--variant", "dev"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"genre {command[0]}: error: {no_dev_packs}'s dev packs hold no train and no val and no test covers "
        "(train 0, val 0, test 0); use --variant full or prepare again with --dev-size N"
    ), error
    assert error.count("\n") == 1
    assert not Path("mlflow.db").exists()


def test_thin_and_empty_genres_are_named_at_prepare(tracking_store: str, tmp_path: Path, caplog) -> None:
    folder = write_cover_folder(tmp_path / "thin", genres=3, per_genre=(20, 20, 1), size=16)
    (folder / "genre3").mkdir()  # a genre folder with nothing in it
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "packed"), image_size=16, workers=1)

    with caplog.at_level(logging.WARNING, logger="genre.data.prepare"):
        prepared = prepare(config, progress=False)

    assert prepared.info.genres == ["genre0", "genre1", "genre2"]
    assert any(
        record.getMessage().startswith("genre genre2 has 1 cover(s): its val and test splits get none")
        for record in caplog.records
    ), caplog.text
    assert [(p.item, p.reason) for p in prepared.problems if p.stage == "scan"] == [
        ("genre3/", "empty genre folder: no genre without covers")
    ]
