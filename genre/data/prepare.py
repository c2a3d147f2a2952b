"""The `prepare` pipeline: source images -> decoded, validated pixels -> static split -> packs on disk.

Nothing here talks to MLflow: `prepare()` returns a `PreparedDataset` that the tracking layer logs.
A killed run loses nothing finished: downloads are atomic and resumable, and packs are built in a
`.partial/` folder and moved into place only when complete (`dataset.json` last). Nor does it leave
processes behind: the decode workers exit when the preparing process does (`genre.data.decode_pool`).
The settings are `genre.data.config.PrepareConfig`; where each image goes is `genre.data.pack_layout`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from genre.config import EXPERIMENTS_DIR, read_config_file
from genre.data import pack
from genre.data.config import COVER_SIZE, DIGIT_SIZE, MANIFEST_DATASET_NAME, PrepareConfig
from genre.data.decode_pool import decode_all
from genre.data.download import DownloadConfig, DownloadResult, download_covers
from genre.data.manifest import read_manifest
from genre.data.near_copies import near_copy_groups
from genre.data.pack_layout import PackHashes, PackLayout, pack_places, plan_packs, repack, same_packs, thin_genres
from genre.data.problems import Problem, write_report
from genre.data.sources import DIGITS_SOURCE, SourceImage, check_image_folder, render_digits, scan_folder
from genre.data.split import SPLITS
from genre.data.writer_lock import writer_lock
from genre.disk import check_writable, disk_faults
from genre.errors import ConfigError, DataError, DiskError

log = logging.getLogger(__name__)

PARTIAL_FOLDER = ".partial"  # packs being written; moved into place only when complete
NEAR_COPIES_FILE = "near_copies.csv"


class TakenName(NamedTuple):
    """Who uses a dataset name: `user` in words, the dataset name and output folder it packs under, and for a named
    dataset its name (for `--dataset`) and the folder it packs (None for other sources)."""

    user: str
    dataset: str
    out: str
    named: str = ""
    folder: Path | None = None


def taken_names(datasets: Path = EXPERIMENTS_DIR / "datasets") -> dict[str, TakenName]:
    """The dataset names a folder may not take by default, casefolded: each named dataset's file stem, `digits` and
    `covers` (the manifest's), and each named dataset's dataset name and output folder name (`covers-dev-256`).

    A folder named like one of them would put its packs beside theirs and its runs in their MLflow experiment."""
    named: list[tuple[Path, TakenName]] = []
    for path in sorted(datasets.glob("*.yaml")):
        try:
            values = read_config_file(path)
        except ConfigError:
            continue  # a broken named dataset is reported when it is used, not by every other prepare
        folder = Path(str(values["folder"])) if values.get("folder") else None
        kind = "manifest" if values.get("manifest") else "folder" if folder else "digits"
        default = {"manifest": MANIFEST_DATASET_NAME, "folder": folder.name if folder else "", "digits": "digits"}
        name = str(values.get("name") or default[kind])
        size = values.get("image_size") or (DIGIT_SIZE if kind == "digits" else COVER_SIZE)
        out = Path(str(values["out"])).name if values.get("out") else f"{name}-{size}"
        named.append((path, TakenName(f"the named dataset {path.stem} ({path})", name, out, path.stem, folder)))
    taken = {path.stem.casefold(): user for path, user in named}  # a file's own name first
    taken.setdefault("digits", TakenName("the bundled digits", "digits", f"digits-{DIGIT_SIZE}"))
    manifest = TakenName("the covers of a manifest", MANIFEST_DATASET_NAME, f"{MANIFEST_DATASET_NAME}-{COVER_SIZE}")
    taken.setdefault(MANIFEST_DATASET_NAME, manifest)
    for _, user in named:
        taken.setdefault(user.dataset.casefold(), user)
        taken.setdefault(user.out.casefold(), user)
    return taken


def check_folder_name(folder: Path) -> None:
    """A one-line `ConfigError` pointing to `--name` when `folder`'s own name would take a named dataset's name."""
    name = folder.resolve().name
    user = taken_names().get(name.casefold())
    if user is None:
        return
    if user.folder is not None and user.folder.resolve() == folder.resolve():
        todo = f"`genre prepare --dataset {user.named}` packs this folder as that dataset, or give it --name NAME"
    else:
        todo = f"give it a name of its own with --name NAME (e.g. --name my-{name})"
    raise ConfigError(
        f"folder {folder} would name its dataset '{name}', which {user.user} uses (data/prepared/{user.out}, "
        f"MLflow experiment genre-{user.dataset}); {todo}"
    )


@dataclass
class PreparedDataset:
    """What one `prepare` run produced, for the caller to report and log."""

    root: Path
    info: pack.DatasetInfo
    source_uri: str
    problems: list[Problem]
    download: DownloadResult | None
    sample_images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def split_file(self) -> Path:
        return self.root / pack.SPLIT_FILE

    @property
    def report_file(self) -> Path:
        return self.root / pack.REPORT_FILE

    @property
    def near_copies_file(self) -> Path:
        return self.root / NEAR_COPIES_FILE

    @property
    def download_failed(self) -> bool:
        return bool(self.download and self.download.failures)


def download_settings(config: PrepareConfig) -> DownloadConfig:
    """How a manifest's covers are downloaded, from the prepare settings."""
    return DownloadConfig(
        connections=config.connections,
        retries=config.retries,
        timeout_seconds=config.timeout_seconds,
        max_bytes=int(config.max_download_mb * 2**20),
    )


def gather_sources(
    config: PrepareConfig, progress: bool
) -> tuple[list[SourceImage], list[Problem], str, DownloadResult | None]:
    """Resolve the configured source into image files; downloads the manifest's covers first."""
    kind = config.source_kind
    if kind == "digits":
        root = render_digits(config.out_dir / "images")
        images, problems = scan_folder(root)
        return images, problems, DIGITS_SOURCE, None
    if kind == "folder":
        root = Path(config.folder or "")
        images, problems = scan_folder(root)
        return images, problems, root.resolve().as_uri(), None
    manifest = Path(config.manifest or "")
    entries, problems = read_manifest(manifest)
    if not entries:
        raise DataError(f"manifest {manifest} has no usable lines; expected 'URL<TAB>genre/file.jpg' per line")
    dest = config.download_folder
    result = download_covers(entries, dest, download_settings(config), progress=progress)
    images = [SourceImage(entry.relpath, dest / entry.relpath) for entry in result.available]
    images.sort(key=lambda image: image.relpath)
    return images, problems + result.failures, manifest.resolve().as_uri(), result


def write_near_copies_file(
    path: Path, groups: list[list[int]], names: list[str], genres_of: list[str], assignment: list[str]
) -> None:
    """`near_copies.csv`: each near-copy group's covers (group numbered from 1), their genre and their split."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "file", "genre", "split"])
        for number, group in enumerate(groups, 1):
            writer.writerows([number, names[i], genres_of[i], assignment[i]] for i in group)
    tmp.replace(path)


def write_split_file(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "genre", "split", "dev_split"])
        writer.writerows(rows)
    tmp.replace(path)


def check_output_folders(config: PrepareConfig) -> None:
    """A folder `prepare` could not write is named before any download or decoding starts (and before a run or a
    folder is made), and so is a source that is not there and a source folder whose own name a named dataset takes
    (unless `--name` names the dataset)."""
    if config.source_kind == "folder":
        folder = Path(config.folder or ".")
        check_image_folder(folder)
        if not config.name:
            check_folder_name(folder)
    if config.source_kind == "manifest" and not Path(config.manifest or "").is_file():
        raise DataError(f"manifest {config.manifest} is not a file; pass --manifest FILE (lines 'URL<TAB>genre/file')")
    check_writable(config.out_dir, "output folder", "--out")
    if config.source_kind == "manifest":
        check_writable(config.download_folder, "download folder", "--download-dir")


def prepare(config: PrepareConfig, progress: bool = True) -> PreparedDataset:
    """Run the whole preparation and return what was made. Raises `GenreError` only when nothing can be.

    One writer at a time per output folder (and download folder): a second waits for the first (`writer_lock`).
    A full or read-only disk is a one-line `DiskError` naming the file; the downloads and the packs of an earlier
    run are kept, and this run's half-written packs are removed to give the space back.
    """
    prepared = _locked_prepare(config, progress, only_if_missing=False)
    assert prepared is not None
    return prepared


def prepare_if_missing(config: PrepareConfig, progress: bool = True) -> PreparedDataset | None:
    """`prepare`, unless the dataset is complete once this process holds the writer lock (another process may have
    prepared it meanwhile: two trainings auto-preparing the bundled digits); None when it was."""
    return _locked_prepare(config, progress, only_if_missing=True)


def _locked_prepare(config: PrepareConfig, progress: bool, only_if_missing: bool) -> PreparedDataset | None:
    check_output_folders(config)
    root = config.out_dir
    kept = f"the downloaded covers and any packs an earlier run finished in {root} are kept"
    with contextlib.ExitStack() as locks:
        locks.enter_context(writer_lock(root, "dataset folder"))
        if only_if_missing and (root / pack.DATASET_FILE).exists():
            return None
        if config.source_kind == "manifest" and config.download_folder.resolve() != root.resolve():
            locks.enter_context(writer_lock(config.download_folder, "download folder"))
        try:
            with disk_faults(root, f"{kept}: free some space and rerun the same command"):
                return _prepare(config, progress)
        except DiskError:
            shutil.rmtree(root / PARTIAL_FOLDER, ignore_errors=True)
            raise


def _prepare(config: PrepareConfig, progress: bool) -> PreparedDataset:
    """Gather the images, decode them into packs laid out before decoding, lay them out again once the near-copies
    and failures are known (copying the rows over when that moves any), and swap the finished packs in."""
    started = time.perf_counter()
    root = config.out_dir
    root.mkdir(parents=True, exist_ok=True)
    images, problems, source_uri, download = gather_sources(config, progress)
    if not images:
        raise DataError(f"no images to pack from {source_uri}; see {root / pack.REPORT_FILE}")
    partial = root / PARTIAL_FOLDER
    shutil.rmtree(partial, ignore_errors=True)  # what a killed run left half-written
    partial.mkdir()
    packed = _decode_into_packs(config, images, partial, progress)
    problems += [
        Problem("decode", image.relpath, reason) for image, reason in zip(images, packed.reasons, strict=True) if reason
    ]
    valid = [i for i, reason in enumerate(packed.reasons) if reason is None]
    if not valid:
        write_report(root / pack.REPORT_FILE, problems, dataset=config.dataset_name, packed=0)
        raise DataError(f"none of the {len(images)} images could be decoded; see {root / pack.REPORT_FILE}")
    names = [images[i].relpath for i in valid]
    genres_of = [images[i].genre for i in valid]
    near_copies = near_copy_groups([packed.hashes[i] for i in valid], config.near_copy_bits)
    layout = plan_packs(names, genres_of, config.fractions, config.seed, config.dev_size, near_copies)
    for warning in thin_genres(layout):
        log.warning("%s", warning)
    if packed.failed or not same_packs(layout, packed.layout):
        # The workers wrote into the split planned before the hashes (and failures) were known: copy the rows over.
        pack_digests = repack(partial, packed.layout, layout, valid, config.size)
    else:
        finished = zip(layout.members, packed.files, packed.digests, strict=True)
        pack_digests = [
            pack.finish_pack(images_path, labels_path, layout.labels[key], digest)
            for key, (images_path, labels_path), digest in finished
        ]
    samples = _samples(partial, layout)
    _swap_in(root, partial)
    info = _write_dataset(config, root, source_uri, layout, names, genres_of, pack_digests, near_copies)
    write_report(
        root / pack.REPORT_FILE,
        problems,
        dataset=info.name,
        digest=info.digest,
        candidates=len(images),
        packed=len(valid),
        downloaded=len(download.fetched) if download else 0,
        already_present=len(download.already_present) if download else 0,
        cross_host_redirects=[asdict(r) for r in download.cross_host] if download else [],
    )
    info.write(root)
    return PreparedDataset(root, info, source_uri, problems, download, samples, time.perf_counter() - started)


@dataclass
class _Decoded:
    """The images decoded into packs laid out as if every one decodes (`layout`, no near-copies known yet): each
    image's failure reason (None: decoded) and average hash, whether any failed, and each pack's files and the
    digest of its rows (complete only when none failed)."""

    layout: PackLayout
    reasons: list[str | None]
    hashes: list[bytes]
    failed: bool
    files: list[tuple[Path, Path]]  # (images, labels) of each pack, in `layout.members` order
    digests: list[hashlib._Hash]


def _decode_into_packs(config: PrepareConfig, images: list[SourceImage], partial: Path, progress: bool) -> _Decoded:
    """Lay the packs out as if every image decodes and allocate them whole (a disk too small fails here, not after
    decoding), then let the workers write each image straight into its rows while the packs are hashed."""
    size = config.size
    names = [image.relpath for image in images]
    layout = plan_packs(names, [image.genre for image in images], config.fractions, config.seed, config.dev_size)
    keys = list(layout.members)
    pack_files = [pack.pack_paths(partial, *key.split("/")) for key in keys]
    image_files = [images_path for images_path, _ in pack_files]
    rows = [len(indices) for indices in layout.members.values()]
    row_bytes = size * size * 3
    check_writable(partial.parent, "packs", "--out", min_free=sum(rows) * row_bytes)
    offsets = [pack.create_pack(path, count, size) for path, count in zip(image_files, rows, strict=True)]
    places = pack_places(layout, offsets, row_bytes, len(images))
    hashes = PackHashes(image_files, places, row_bytes)
    failed = False

    def follow(decoded: int, part: list[str | None]) -> None:
        nonlocal failed
        failed = failed or any(reason is not None for reason in part)
        if not failed:  # after a failure the packs are rebuilt by `repack`, and hashed then
            hashes.follow(decoded)

    try:
        reasons, image_hashes = decode_all(images, size, places, image_files, config.workers, progress, follow)
    finally:
        hashes.close()
    return _Decoded(layout, reasons, image_hashes, failed, pack_files, hashes.digests)


def _samples(partial: Path, layout: PackLayout) -> dict[str, list[np.ndarray]]:
    """Up to 8 training images of each genre, for the run's figure of examples."""
    samples: dict[str, list[np.ndarray]] = {genre: [] for genre in layout.genres}
    train_labels = layout.labels["full/train"]
    if len(train_labels):
        train = np.load(pack.pack_paths(partial, "full", "train")[0], mmap_mode="r")
        for label, genre in enumerate(layout.genres):
            samples[genre] = [np.array(train[row]) for row in np.flatnonzero(train_labels == label)[:8]]
        del train
    return samples


def _swap_in(root: Path, partial: Path) -> None:
    """Move the finished packs in: dataset.json goes first and comes back last (`_write_dataset`, then
    `DatasetInfo.write`), so a reader never sees a half-replaced set as complete."""
    (root / pack.DATASET_FILE).unlink(missing_ok=True)
    for variant in pack.VARIANTS:
        shutil.rmtree(root / variant, ignore_errors=True)
        (partial / variant).replace(root / variant)
    shutil.rmtree(partial)


def _write_dataset(
    config: PrepareConfig,
    root: Path,
    source_uri: str,
    layout: PackLayout,
    names: list[str],
    genres_of: list[str],
    pack_digests: list[str],
    near_copies: list[list[int]],
) -> pack.DatasetInfo:
    """The split and near-copies files of the packed images (`names`, in pack order), and what dataset.json will say
    of them."""
    write_split_file(
        root / pack.SPLIT_FILE,
        [(name, genres_of[k], layout.assignment[k], layout.dev[k]) for k, name in enumerate(names)],
    )
    write_near_copies_file(root / NEAR_COPIES_FILE, near_copies, names, genres_of, layout.assignment)
    digests = dict(zip(layout.members, pack_digests, strict=True))
    counts = {
        variant: {split: len(layout.members[f"{variant}/{split}"]) for split in SPLITS} for variant in pack.VARIANTS
    }
    return pack.DatasetInfo(
        name=config.dataset_name,
        source=source_uri,
        genres=layout.genres,
        image_size=config.size,
        seed=config.seed,
        counts=counts,
        pack_digests=digests,
        digest=pack.dataset_digest(layout.genres, config.size, digests),
        files={key: [names[i] for i in members.tolist()] for key, members in layout.members.items()},
        near_copy_bits=config.near_copy_bits,
        near_copies=[[names[i] for i in group] for group in near_copies],
    )
