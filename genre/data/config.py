"""What `genre prepare` makes (`PrepareConfig`), which prepared dataset a stage reads (`DatasetChoice`,
`ModelDataChoice`) and which part of it (`FoldChoice`: the static split or a cross-validation fold): settings only,
importable without the preparing code, so the command line lists them at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from genre.config import SEEDS, check_range, setting
from genre.data.near_copies import DEFAULT_MAX_BITS, HASH_SIDE
from genre.data.pack import VARIANTS
from genre.data.split import SplitFractions
from genre.errors import ConfigError

COVER_SIZE = 350  # the original work's cover size
DIGIT_SIZE = 32  # 4x the 8x8 digits: enough for conv nets, small enough for CPU work
MIN_SIZE, MAX_SIZE = 8, 1024  # packed image sides
MANIFEST_DATASET_NAME = "covers"
DEFAULT_DATASET = f"data/prepared/digits-{DIGIT_SIZE}"  # where `genre prepare` with no flags puts the bundled digits
DATASET_NAME = re.compile(r"[^/\\\x00.][^/\\\x00]*")  # a name, never a path: no separator, no leading dot


@dataclass(frozen=True)
class PrepareConfig:
    """What `genre prepare` is asked to do. Leave `manifest` and `folder` unset for the bundled digits."""

    manifest: str | None = setting(None, "manifest of 'URL<TAB>genre/file.jpg' lines to download and pack")
    folder: str | None = setting(None, "folder of images laid out ROOT/<genre>/<file> to pack")
    out: str | None = setting(None, "output folder (default: data/prepared/<name>-<image size>)")
    name: str | None = setting(
        None, "dataset name (default: digits, covers, or the folder's name when no named dataset takes it)"
    )
    image_size: int | None = setting(
        None,
        f"side of the packed square images, {MIN_SIZE}..{MAX_SIZE} pixels (default: {COVER_SIZE}; digits {DIGIT_SIZE})",
    )
    seed: int = setting(2015, "seed of the static split")
    dev_size: int = setting(
        1000, "images drawn from the training part for the development subset (0 = none: its packs are empty)"
    )
    near_copy_bits: int = setting(
        DEFAULT_MAX_BITS,
        f"covers whose {HASH_SIDE}x{HASH_SIDE} average hashes differ in at most this many of {HASH_SIDE**2} bits are "
        "near-copies, kept on one side of every split (-1: do not look for them)",
    )
    train_fraction: float = setting(0.8, "share of each genre for training")
    val_fraction: float = setting(0.1, "share of each genre for validation")
    test_fraction: float = setting(0.1, "share of each genre for test")
    workers: int = setting(0, "decoding processes; 0 = every usable core")
    download_dir: str | None = setting(None, "where downloaded covers are kept (default: covers/ beside the manifest)")
    connections: int = setting(16, "concurrent downloads")
    retries: int = setting(3, "retries of a download after a 5xx, timeout or broken connection")
    timeout_seconds: float = setting(20.0, "connect/read timeout of one download")
    max_download_mb: float = setting(10.0, "largest cover accepted, in MiB")

    def __post_init__(self) -> None:
        unset = f" pixels (unset = {COVER_SIZE}, digits {DIGIT_SIZE})"
        check_range(self, "image_size", MIN_SIZE, MAX_SIZE, optional=True, note=unset)
        check_range(self, "seed", *SEEDS)
        check_range(self, "dev_size", 0, note=" (0 = no development subset)")
        check_range(self, "near_copy_bits", -1, HASH_SIDE**2 // 4, note=" (-1 = do not look for near-copies)")
        for name in ("train_fraction", "val_fraction", "test_fraction"):  # every split needs covers
            check_range(self, name, 0.0, 1.0, low_open=True, note=" (train, val and test each need covers)")
        shares = (self.train_fraction, self.val_fraction, self.test_fraction)
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(
                "'train_fraction', 'val_fraction' and 'test_fraction' must sum to 1, got "
                f"{' + '.join(f'{share:g}' for share in shares)} = {sum(shares):g}"
            )
        if self.name is not None and not DATASET_NAME.fullmatch(self.name):
            raise ConfigError(
                f"'name' is a dataset's name, not a path: no '/' or '\\', not starting with '.', got {self.name!r}; "
                "--out chooses where the packs go"
            )
        check_range(self, "workers", 0, note=" (0 = every usable core)")
        check_range(self, "connections", 1)
        check_range(self, "retries", 0)
        check_range(self, "timeout_seconds", 0.0, low_open=True)
        check_range(self, "max_download_mb", 0.0, low_open=True)

    @property
    def source_kind(self) -> str:
        if self.manifest and self.folder:
            raise ConfigError("give either --manifest or --folder, not both")
        return "manifest" if self.manifest else "folder" if self.folder else "digits"

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        kind = self.source_kind
        if kind == "folder":
            return Path(self.folder or ".").resolve().name
        return MANIFEST_DATASET_NAME if kind == "manifest" else "digits"

    @property
    def size(self) -> int:
        if self.image_size is not None:
            return self.image_size
        return DIGIT_SIZE if self.source_kind == "digits" else COVER_SIZE

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("data") / "prepared" / f"{self.dataset_name}-{self.size}"

    @property
    def fractions(self) -> SplitFractions:
        return SplitFractions(self.train_fraction, self.val_fraction, self.test_fraction)

    @property
    def download_folder(self) -> Path:
        """Where a manifest's covers are kept."""
        if self.download_dir:
            return Path(self.download_dir)
        return Path(self.manifest or "").resolve().parent / "covers"


@dataclass(frozen=True)
class DatasetChoice:
    """A prepared dataset folder and which of its variants to read."""

    data: str = setting(
        DEFAULT_DATASET, "prepared dataset folder (from `genre prepare`; the bundled digits are prepared on first use)"
    )
    variant: str = setting("full", "the full dataset or its development subset", VARIANTS)


@dataclass(frozen=True)
class ModelDataChoice(DatasetChoice):
    """The dataset a stage scores a logged model on (`evaluate`, `interpret`): unset (""), the one the model was
    trained on, which the stage reads from the model's run (`genre.stages.model_data`)."""

    data: str = setting(
        "",
        "prepared dataset folder (default: the one the model was trained on, read from its run; for a model that "
        f"names no run, {DEFAULT_DATASET})",
    )
    variant: str = setting("", "the full dataset or its development subset (default: the model's, else full)", VARIANTS)


MAX_FOLDS, MAX_REPEATS = 50, 100


@dataclass(frozen=True)
class FoldChoice:
    """Which part of the covers a run trains, validates and tests on: the static split (folds 0) or one fold of a
    K-fold cross-validation."""

    folds: int = setting(0, f"cross-validation: K folds over all covers, 2..{MAX_FOLDS} (0: the static split)")
    fold: int = setting(0, "cross-validation: the fold whose covers are the test part, 0..folds-1")
    repeat: int = setting(0, f"cross-validation: which repetition of the folds, 0..{MAX_REPEATS - 1} (each reshuffles)")

    def __post_init__(self) -> None:
        check_fold_count(self.folds)
        check_range(self, "fold", 0, max(self.folds - 1, 0), note=" (one of the folds, counted from 0)")
        check_range(self, "repeat", 0, MAX_REPEATS - 1)


def check_fold_count(folds: int) -> None:
    """A one-line `ConfigError` unless `folds` is 0 (the static split) or 2..MAX_FOLDS."""
    if folds == 1 or not 0 <= folds <= MAX_FOLDS:
        raise ConfigError(f"'folds' must be 0 (the static split) or 2..{MAX_FOLDS}, got {folds}")
