"""Cross-validation folds: stratified, disjoint, every cover once per repeat, near-copies together, and read
straight from the packs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genre.data.config import FoldChoice, PrepareConfig
from genre.data.folds import CoverRows, all_covers, fold_numbers, fold_parts, open_parts
from genre.data.prepare import prepare
from tests.conftest import refused, write_cover_folder
from tests.data.test_near_copies import TWINS, covers_with_twins


@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_cover_folder(tmp_path_factory.mktemp("folds") / "fold-covers", genres=3, per_genre=[40, 25, 12])
    out = root.parent / "packed"
    prepare(PrepareConfig(folder=str(root), out=str(out), image_size=16, dev_size=20), progress=False)
    return out


def test_each_repeat_scores_every_cover_exactly_once_in_stratified_disjoint_folds(unbalanced: Path) -> None:
    covers = all_covers(unbalanced, "full")
    assert len(covers.files) == 77 and len(set(covers.files)) == 77
    for repeat in (0, 1):
        tested: list[str] = []
        for fold in range(5):
            parts = fold_parts(covers, FoldChoice(folds=5, fold=fold, repeat=repeat))
            keys = {split: {covers.files[i] for i in indices} for split, indices in parts.items()}
            assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"])
            assert not (keys["val"] & keys["test"])
            assert sum(map(len, keys.values())) == 77  # the rest is split into train and val, nothing dropped
            tested += keys["test"]
            # stratified: each genre's share of the test fold within two covers of its share of the whole
            # (StratifiedGroupKFold assigns groups greedily, so not always within one)
            for label, total in enumerate(np.bincount(covers.labels)):
                assert abs(np.sum(covers.labels[parts["test"]] == label) - total / 5) <= 2.0
            assert len(parts["val"]) == pytest.approx(77 * 0.8 / 9, abs=3)  # the static split's 10% of the rest
        assert sorted(tested) == sorted(covers.files)
    first = fold_numbers(covers.labels, covers.groups, 5, 0, covers.seed)
    assert not np.array_equal(first, fold_numbers(covers.labels, covers.groups, 5, 1, covers.seed))  # reshuffled
    assert np.array_equal(first, fold_numbers(covers.labels, covers.groups, 5, 0, covers.seed))  # reproducible


def test_near_copies_stay_in_one_fold_and_on_one_side_of_each_folds_validation(tmp_path: Path) -> None:
    root = covers_with_twins(tmp_path / "twin-covers")
    out = tmp_path / "packed"
    prepare(PrepareConfig(folder=str(root), out=str(out), image_size=32, dev_size=0), progress=False)
    covers = all_covers(out, "full")
    where = {name: index for index, name in enumerate(covers.files)}
    for fold in range(4):
        parts = fold_parts(covers, FoldChoice(folds=4, fold=fold))
        part_of = {int(i): split for split, indices in parts.items() for i in indices}
        for genre, number in TWINS:
            twin = f"genre{(genre + 1) % 3 if number == 17 else genre}/twin-{genre}-{number:03d}.jpg"
            original = f"genre{genre}/{number:03d}.jpg"
            assert part_of[where[original]] == part_of[where[twin]], f"fold {fold} splits {original} from its twin"


def test_a_folds_packs_read_the_same_pixels_as_the_static_packs(unbalanced: Path) -> None:
    static = open_parts(unbalanced, "full", FoldChoice())
    pixels = {name: static[split].images[row] for split in static for row, name in enumerate(static[split].files)}
    packs = open_parts(unbalanced, "full", FoldChoice(folds=3, fold=1))
    for pack in packs.values():
        assert isinstance(pack.images, CoverRows)
        shuffled = np.random.default_rng(0).permutation(len(pack))
        gathered = pack.images[shuffled]
        for position, index in enumerate(shuffled):
            assert np.array_equal(gathered[position], pixels[pack.files[index]])
        assert np.array_equal(pack.images[2:5], np.stack([pixels[name] for name in pack.files[2:5]]))
        assert pack.images.shape == (len(pack), 16, 16, 3)


def test_fold_settings_out_of_range_are_refused_naming_them() -> None:
    assert "2.." in refused(FoldChoice, {"folds": 1}, "folds")
    assert "0..4" in refused(FoldChoice, {"folds": 5, "fold": 5}, "fold")
    refused(FoldChoice, {"repeat": -1}, "repeat")


def test_more_folds_than_the_smallest_genre_holds_is_refused(unbalanced: Path) -> None:
    covers = all_covers(unbalanced, "full")
    with pytest.raises(Exception, match="'folds' 13 is more than the 12 covers"):
        fold_parts(covers, FoldChoice(folds=13, fold=0))


def test_too_many_folds_are_refused_in_one_line_before_any_run_opens(
    unbalanced: Path, tracking_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from genre.cli import main

    for command in (["baseline", "--model", "rf"], ["train", "--epochs", "1"]):
        assert main([*command, "--data", str(unbalanced), "--folds", "13", "-q"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.endswith("'folds' 13 is more than the 12 covers of the dataset's smallest genre: use at most 12")
        assert len(error.splitlines()) == 1
    client = MlflowClient(tracking_store)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
