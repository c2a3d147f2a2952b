"""The prepare pipeline end to end on real files: bad inputs, determinism, and surviving SIGKILL."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from PIL import Image

from genre.data.config import PrepareConfig
from genre.data.pack import DATASET_FILE, DatasetInfo, dataset_digest, open_pack, pack_paths
from genre.data.prepare import check_output_folders, prepare
from tests.conftest import PROJECT_ROOT, jpeg_bytes, refused, write_cover_folder
from tests.coverserver import CoverServer, ok, redirect


def pack_files(root: Path) -> dict[str, bytes]:
    """Every file that defines the packed dataset, by its path under root."""
    names = sorted(p for p in root.rglob("*") if p.suffix in (".npy", ".csv") and ".partial" not in p.parts)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in names} | {
        DATASET_FILE: (root / DATASET_FILE).read_bytes()
    }


def awkward_folder(root: Path) -> Path:
    """Eight good covers per genre plus one of each kind of trouble the issue names."""
    write_cover_folder(root, genres=2, per_genre=8)
    odd = root / "genre0"
    cut = jpeg_bytes((300, 300), seed=99, quality=95)
    (odd / "truncated.jpg").write_bytes(cut[: len(cut) // 2])
    (odd / "zero.jpg").write_bytes(b"")
    (odd / "readme.jpg").write_text("not a cover\n")
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(odd / "cmyk.jpg", "JPEG")
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(odd / "deep.png")
    Image.new("RGBA", (50, 50), (0, 0, 255, 128)).save(odd / "alpha.png")
    palette = Image.new("P", (30, 30), 1)
    palette.putpalette([0, 0, 0, 250, 250, 0] + [0] * 762)
    palette.save(odd / "palette.gif")
    Image.new("1", (20000, 20000)).save(odd / "bomb.png")
    return root


def test_awkward_folder_packs_every_valid_image_and_reports_each_invalid_one(tmp_path: Path) -> None:
    folder = awkward_folder(tmp_path / "my-covers")
    prepared = prepare(PrepareConfig(folder=str(folder), out=str(tmp_path / "out"), image_size=32), progress=False)

    reasons = {p.item: p.reason for p in prepared.problems}
    assert set(reasons) == {"genre0/truncated.jpg", "genre0/zero.jpg", "genre0/readme.jpg", "genre0/bomb.png"}
    assert "truncated" in reasons["genre0/truncated.jpg"]
    assert "empty" in reasons["genre0/zero.jpg"]
    assert "not an image" in reasons["genre0/readme.jpg"]
    assert "decompression bomb" in reasons["genre0/bomb.png"]

    packed = [name for files in (prepared.info.files[f"full/{s}"] for s in ("train", "val", "test")) for name in files]
    assert len(packed) == 16 + 4
    assert {"genre0/cmyk.jpg", "genre0/deep.png", "genre0/alpha.png", "genre0/palette.gif"} <= set(packed)

    report = json.loads(prepared.report_file.read_text())
    assert report["problem_count"] == 4 and report["packed"] == 20
    assert {p["item"] for p in report["problems"]} == set(reasons)


def test_packs_hold_the_decoded_pixels_labels_and_names(tmp_path: Path) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=3, per_genre=10)
    prepared = prepare(PrepareConfig(folder=str(folder), out=str(tmp_path / "out"), image_size=16), progress=False)
    info = DatasetInfo.read(prepared.root)
    assert info.genres == ["genre0", "genre1", "genre2"]
    assert info.counts["full"] == {"train": 24, "val": 3, "test": 3}
    train = open_pack(prepared.root, "full", "train")
    assert train.images.shape == (24, 16, 16, 3) and isinstance(train.images, np.memmap)
    for index in (0, 11, 23):
        name = train.files[index]
        assert info.genres[train.labels[index]] == name.split("/")[0]
        with Image.open(folder / name) as image:
            expected = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BICUBIC), dtype=int)
        assert np.abs(train.images[index].astype(int) - expected).mean() < 12
    rows = (prepared.root / "split.csv").read_text().splitlines()
    assert rows[0] == "file,genre,split,dev_split" and len(rows) == 31


def test_preparing_again_gives_byte_identical_packs(tmp_path: Path) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=3, per_genre=12)
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "out"), image_size=24, dev_size=12)
    first = pack_files(prepare(config, progress=False).root)
    second = pack_files(prepare(config, progress=False).root)
    assert first == second


def packs_made_plainly(folder: Path, size: int, dev_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The packs as `prepare` made them before its workers wrote them in place (issue 16): every file decoded on
    its own, the ones that decode split, and each pack's images stacked in file-name order beside int32 labels."""
    from genre.data.images import InvalidImage, decode_image
    from genre.data.sources import scan_folder
    from genre.data.split import SPLITS, SplitFractions, development_subset, stratified_split

    pixels = {}
    for image in scan_folder(folder)[0]:
        with contextlib.suppress(InvalidImage):
            pixels[image.relpath] = decode_image(image.path, size)
    names = sorted(pixels)
    genres_of = [name.split("/")[0] for name in names]
    genres = sorted(set(genres_of))
    assignment = stratified_split(names, genres_of, SplitFractions(), seed)
    dev = development_subset(names, genres_of, assignment, dev_size, SplitFractions(), seed)
    packs = {}
    for variant, splits_of in (("full", assignment), ("dev", dev)):
        for split in SPLITS:
            members = [k for k, s in enumerate(splits_of) if s == split]
            images = np.zeros((len(members), size, size, 3), dtype=np.uint8)
            for row, k in enumerate(members):
                images[row] = pixels[names[k]]
            labels = np.array([genres.index(genres_of[k]) for k in members], dtype=np.int32)
            packs[f"{variant}/{split}"] = (images, labels)
    return packs


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "undecodable",
    [[], ["genre0/000-bad.jpg", "genre1/005-bad.jpg", "genre2/zzz-bad.jpg"]],
    ids=["every file decodes", "the first, a middle and the last file do not"],
)
def test_the_packs_and_digests_are_those_of_decoding_each_file_and_stacking_the_splits(
    tmp_path: Path, undecodable: list[str]
) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=3, per_genre=[14, 9, 20], size=72)
    for name in undecodable:
        (folder / name).write_bytes(jpeg_bytes((72, 72))[:300])  # truncated
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "out"), image_size=40, dev_size=20, workers=2)
    prepared = prepare(config, progress=False)
    assert sorted(problem.item for problem in prepared.problems) == undecodable

    expected = packs_made_plainly(folder, size=40, dev_size=20, seed=config.seed)
    digests = {}
    for key, (images, labels) in expected.items():
        images_path, labels_path = pack_paths(prepared.root, *key.split("/"))
        assert images_path.read_bytes() == npy_bytes(images), key
        assert labels_path.read_bytes() == npy_bytes(labels), key
        digests[key] = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert prepared.info.pack_digests == digests
    assert prepared.info.digest == dataset_digest(["genre0", "genre1", "genre2"], 40, digests)
    assert len(expected["dev/train"][0]) > 0 and not (prepared.root / ".partial").exists()


def test_the_bundled_digits_pack_without_network(tmp_path: Path) -> None:
    prepared = prepare(PrepareConfig(out=str(tmp_path / "digits")), progress=False)
    assert prepared.info.genres == [str(d) for d in range(10)]
    assert sum(prepared.info.counts["full"].values()) == 1797
    assert prepared.info.counts["dev"] == {"train": 800, "val": 100, "test": 100}
    assert prepared.info.image_size == 32 and not prepared.problems


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"image_size": 0}, "image_size"),  # once silently the default size
        ({"image_size": 7}, "image_size"),
        ({"image_size": 1025}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"dev_size": -1}, "dev_size"),  # once a 9/0/0 development subset
        ({"train_fraction": -0.1, "val_fraction": 0.5, "test_fraction": 0.6}, "train_fraction"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"train_fraction": 0.9}, "train_fraction"),  # the three do not sum to 1
        ({"workers": -1}, "workers"),
        ({"connections": 0}, "connections"),
        ({"retries": -1}, "retries"),
        ({"timeout_seconds": 0.0}, "timeout_seconds"),
        ({"max_download_mb": 0.0}, "max_download_mb"),
        ({"max_download_mb": float("inf")}, "max_download_mb"),
    ],
)
def test_a_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(PrepareConfig, settings, named)


def test_an_unset_image_size_is_the_sources_default_and_a_development_subset_may_be_empty(tmp_path: Path) -> None:
    assert PrepareConfig().size == 32 and PrepareConfig(folder="covers").size == 350
    folder = write_cover_folder(tmp_path / "my-covers", genres=2, per_genre=5, size=16)
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "p"), image_size=8, dev_size=0, workers=1)
    prepared = prepare(config, progress=False)
    assert prepared.info.counts["dev"] == {"train": 0, "val": 0, "test": 0}
    assert sum(prepared.info.counts["full"].values()) == 10


def run_prepare(args: list[str], tmp_path: Path, output: IO[str] | int = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(PROJECT_ROOT)}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "genre.cli", "prepare", "--quiet", *args],
        cwd=tmp_path,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(process: subprocess.Popen, condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"prepare ended before it could be killed:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "prepare never reached the point to kill it"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_killed_mid_pack_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=4, per_genre=60, size=400)
    common = ["--folder", str(folder), "--image-size", "128", "--workers", "1", "--dev-size", "40"]
    finish(run_prepare([*common, "--out", "whole"], tmp_path))

    killed = run_prepare([*common, "--out", "killed"], tmp_path)
    kill_when(killed, lambda: first_row_written(tmp_path / "killed" / ".partial" / "full" / "train-images.npy"))
    assert not (tmp_path / "killed" / DATASET_FILE).exists()  # never marked complete

    finish(run_prepare([*common, "--out", "killed"], tmp_path))
    assert pack_files(tmp_path / "killed") == pack_files(tmp_path / "whole")
    assert not (tmp_path / "killed" / ".partial").exists()


def first_row_written(images_path: Path) -> bool:
    """Whether a pack being written already holds pixels in its first row (the workers write the packs in place)."""
    try:
        return bool(np.load(images_path, mmap_mode="r")[0].any())
    except (OSError, ValueError, EOFError, IndexError):  # not there yet, or its header not written yet
        return False


def process_table() -> dict[int, tuple[str, int, str]]:
    """Every process now: pid -> (state, parent pid, start time), from /proc/PID/stat."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended while we looked
            table[int(entry.name)] = (fields[0], int(fields[1]), fields[19])
    return table


def descendants(pid: int, table: dict[int, tuple[str, int, str]]) -> set[int]:
    found, parents = set(), {pid}
    while parents:
        parents = {child for child, (_, parent, _) in table.items() if parent in parents} - found
        found |= parents
    return found


def opens_file_in(pid: int, folder: str) -> bool:
    """Whether process `pid` has a file under `folder` open."""
    try:
        return any(os.readlink(fd).startswith(folder) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it ended, or closed a file while we looked
        return False


def left_behind(family: dict[int, tuple[str, int, str]], marker: str) -> list[str]:
    """The processes of `family` still running (same pid and start time, not a zombie), and any process whose
    command line holds `marker`; as `ps` would list them."""
    rows = []
    for pid, (state, parent, started) in process_table().items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        known = pid in family and family[pid][2] == started
        if state != "Z" and (known or marker in command):
            rows.append(f"{pid} {parent} {command[:160]}")
    return rows


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.slow
def test_killing_prepare_mid_decode_leaves_no_process_behind(tmp_path: Path, signum: signal.Signals) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=2, per_genre=8, size=1000)
    for original in sorted(folder.rglob("*.jpg")):  # 800 files, 16 of them written: seconds of decoding, not of setup
        for copy in range(1, 50):
            os.link(original, original.with_name(f"{original.stem}-{copy:02d}.jpg"))
    log = tmp_path / "prepare.log"
    args = ["--folder", str(folder), "--image-size", "256", "--workers", "2", "--out", "out"]
    with log.open("w") as output:
        process = run_prepare(args, tmp_path, output)
    packs = str(tmp_path / "out" / ".partial")
    family: dict[int, tuple[str, int, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while True:  # until both decode workers (children of the fork server) exist and one is writing pixels
            table = process_table()
            family = {pid: table[pid] for pid in descendants(process.pid, table)}
            workers = [pid for pid, (_, parent, _) in family.items() if parent in family]
            if len(workers) == 2 and any(opens_file_in(pid, packs) for pid in workers):
                break
            assert process.poll() is None, f"prepare ended before decoding:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"prepare never started decoding:\n{log.read_text()}"
            time.sleep(0.01)
        process.send_signal(signum)
        process.wait(timeout=120)
        assert not (tmp_path / "out" / DATASET_FILE).exists()  # stopped mid-way, not after finishing

        deadline = time.monotonic() + 120  # "within seconds" on an idle machine; a ceiling, not the promise
        while (left := left_behind(family, str(tmp_path))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, "left running after prepare was killed:\n" + "\n".join(left)
        if signum == signal.SIGTERM:  # stopped like Ctrl-C: says so, keeps what was finished
            assert process.returncode == 130, log.read_text()
            assert "interrupted; finished work is kept" in log.read_text()
    finally:
        for row in left_behind(family, str(tmp_path)):
            os.kill(int(row.split()[0]), signal.SIGKILL)


@pytest.mark.slow
def test_killed_mid_download_then_rerun_fetches_only_the_rest(cover_server: CoverServer, tmp_path: Path) -> None:
    entries = [
        cover_server.add(n + 1, f"genre{n % 2}/{n:03d}.jpg", ok(jpeg_bytes((60, 60), seed=n), delay=0.05))
        for n in range(60)
    ]
    manifest = tmp_path / "links.tsv"
    manifest.write_text("".join(f"{e.url}\t{e.relpath}\n" for e in entries))
    common = ["--manifest", str(manifest), "--image-size", "16", "--connections", "2", "--dev-size", "10"]

    killed = run_prepare([*common, "--out", "killed", "--download-dir", "dl-killed"], tmp_path)
    downloads = tmp_path / "dl-killed"
    kill_when(killed, lambda: len(list(downloads.rglob("*.jpg"))) >= 10)
    had = [e for e in entries if (downloads / e.relpath).exists()]
    assert 10 <= len(had) < len(entries)

    output = finish(run_prepare([*common, "--out", "killed", "--download-dir", "dl-killed"], tmp_path))
    assert "prepared covers: 60 images" in output
    assert all(cover_server.requests(e) == 1 for e in had)  # nothing it had was fetched again

    finish(run_prepare([*common, "--out", "whole", "--download-dir", "dl-whole"], tmp_path))
    assert pack_files(tmp_path / "killed") == pack_files(tmp_path / "whole")


@pytest.mark.slow
def test_a_failed_download_is_reported_and_the_exit_status_says_so(cover_server: CoverServer, tmp_path: Path) -> None:
    good = [cover_server.add(n + 1, f"rock/{n}.jpg", ok(jpeg_bytes((40, 40), seed=n))) for n in range(10)]
    missing = cover_server.add(11, "rock/gone.jpg")  # no route: 404
    cover_server.routes.pop(f"/img/{missing.relpath}")
    manifest = tmp_path / "links.tsv"
    manifest.write_text("".join(f"{e.url}\t{e.relpath}\n" for e in [*good, missing]) + "not a manifest line\n")

    process = run_prepare(["--manifest", str(manifest), "--image-size", "16", "--out", "out"], tmp_path)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "1 cover(s) failed to download" in output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    reasons = {p["item"]: p["reason"] for p in report["problems"]}
    assert "404" in reasons["rock/gone.jpg"]
    assert "expected 'URL<TAB>genre/file.jpg'" in reasons["line 12"]
    assert report["packed"] == 10


def test_a_cover_saved_from_another_host_is_named_in_the_report(cover_server: CoverServer, tmp_path: Path) -> None:
    entries = [cover_server.add(n + 1, f"g{n % 2}/{n}.jpg", ok(jpeg_bytes((30, 30), seed=n))) for n in range(10)]
    cover_server.add(99, "cdn/real.jpg", ok(jpeg_bytes((30, 30), seed=99)))
    elsewhere = cover_server.url("cdn/real.jpg", host="localhost")
    moved = cover_server.add(11, "g1/moved.jpg", redirect(elsewhere))
    manifest = tmp_path / "links.tsv"
    manifest.write_text("".join(f"{e.url}\t{e.relpath}\n" for e in [*entries, moved]))

    config = PrepareConfig(manifest=str(manifest), out=str(tmp_path / "out"), image_size=8, dev_size=0, workers=1)
    prepared = prepare(config, progress=False)

    report = json.loads(prepared.report_file.read_text())
    assert report["packed"] == 11 and report["problems"] == []  # kept: a CDN redirect is no fault
    assert report["cross_host_redirects"] == [{"item": "g1/moved.jpg", "url": moved.url, "final_url": elsewhere}]


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("missing", "is missing"),
        ("shape", "expected (N, 16, 16, 3) uint8"),
        ("labels", "labels outside 0..2"),
    ],
)
def test_a_damaged_pack_gives_a_clear_error(tmp_path: Path, corruption: str, message: str) -> None:
    from genre.errors import DataError

    folder = write_cover_folder(tmp_path / "my-covers", genres=3, per_genre=10)
    root = prepare(PrepareConfig(folder=str(folder), out=str(tmp_path / "out"), image_size=16), progress=False).root
    images, labels = root / "full" / "train-images.npy", root / "full" / "train-labels.npy"
    if corruption == "missing":
        images.unlink()
    elif corruption == "shape":
        np.save(images, np.zeros((24, 8, 8, 3), dtype=np.uint8))
    else:
        np.save(labels, np.full(24, 7, dtype=np.int32))
    with pytest.raises(DataError, match=re.escape(message)):
        open_pack(root, "full", "train")


def test_a_full_disk_while_packing_is_one_line_and_keeps_the_earlier_packs(tmp_path: Path, monkeypatch) -> None:
    from genre.data import pack
    from genre.errors import DiskError

    config = PrepareConfig(folder=str(write_cover_folder(tmp_path / "src")), out=str(tmp_path / "out"), image_size=16)
    before = pack_files(prepare(config, progress=False).root)
    finish_pack = pack.finish_pack

    def onto_a_full_disk(images_path: Path, labels_path: Path, *args):  # every write to /dev/full fails: ENOSPC
        if labels_path.parent.name == "dev":
            labels_path.parent.mkdir(parents=True, exist_ok=True)
            labels_path.symlink_to("/dev/full")
        return finish_pack(images_path, labels_path, *args)

    monkeypatch.setattr(pack, "finish_pack", onto_a_full_disk)
    with pytest.raises(DiskError) as caught:
        prepare(config, progress=False)
    assert str(caught.value) == (
        f"no space left on device writing {tmp_path / 'out'}; the downloaded covers and any packs an earlier run "
        f"finished in {tmp_path / 'out'} are kept: free some space and rerun the same command"
    )
    assert not (tmp_path / "out" / ".partial").exists()  # the half-written packs gave their space back
    assert pack_files(tmp_path / "out") == before
    open_pack(tmp_path / "out", "dev", "train")

    monkeypatch.setattr(pack, "finish_pack", finish_pack)
    assert pack_files(prepare(config, progress=False).root) == before


def test_a_disk_too_small_for_the_decoded_images_is_one_line_not_a_crash(tracking_store: str, small_disk, capsys):
    from genre.cli import main

    # 30 covers at 128 px need 2.5 MB of packs (24 of them twice: the development subset): more than the disk has
    # once the output folder passes its check. Memory-mapped without reserving it, the decode workers once died of
    # SIGBUS writing the pages that did not fit.
    disk = small_disk(1200)
    folder = write_cover_folder(Path("src"))
    assert main(["prepare", "-q", "--folder", str(folder), "--out", str(disk / "covers"), "--image-size", "128"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"genre prepare: error: not enough space for the packs {disk / 'covers'}: 1.2 MB free, 2.5 MB needed; "
        "free some space or choose another folder with --out"
    )
    assert [path.name for path in (disk / "covers").iterdir()] == []


def test_a_read_only_output_folder_fails_before_a_run_opens(tracking_store: str, read_only_folder: Path, capsys):
    from genre.cli import main

    assert main(["prepare", "-q", "--out", str(read_only_folder / "digits")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"genre prepare: error: output folder {read_only_folder / 'digits'} is not writable (")
    assert error.endswith("); make it writable or choose another with --out\n") and error.count("\n") == 1
    assert not Path("mlflow.db").exists()


def test_a_folder_named_like_a_named_dataset_is_refused_before_a_run_opens_pointing_to_name(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    from genre.cli import main

    datasets = Path("experiments") / "datasets"  # the project's named datasets, in the test's working folder
    datasets.mkdir(parents=True)
    for named in ("covers", "covers-64", "covers-dev", "digits"):
        (datasets / f"{named}.yaml").write_text((PROJECT_ROOT / datasets / f"{named}.yaml").read_text())
    for name in ("covers", "Covers", "digits", "covers-64", "covers-dev", "covers-dev-256", "covers-350"):
        folder = write_cover_folder(tmp_path / "mine" / name, genres=2, per_genre=5, size=16)
        assert main(["prepare", "-q", "--folder", str(folder), "--image-size", "16"]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"genre prepare: error: folder {folder} would name its dataset '{name}', which the ")
        assert "--name NAME" in error and error.count("\n") == 1
    assert not Path("mlflow.db").exists() and not Path("data").exists()

    named = PrepareConfig(folder=str(folder), name="my-covers")
    check_output_folders(named)  # as --name my-covers: the dataset is named by the user
    assert named.out_dir == Path("data/prepared/my-covers-350")


def test_a_named_datasets_own_folder_is_pointed_to_that_dataset_and_other_folders_keep_their_names(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    from genre.cli import main

    own = write_cover_folder(tmp_path / "shared" / "covers-dev", genres=2, per_genre=5, size=16)
    (Path("experiments") / "datasets").mkdir(parents=True)
    (Path("experiments") / "datasets" / "covers-dev.yaml").write_text(f"folder: {own}\nname: covers-dev\n")

    assert main(["prepare", "-q", "--folder", str(own)]) == 2
    assert "`genre prepare --dataset covers-dev` packs this folder as that dataset" in capsys.readouterr().err
    mine = PrepareConfig(folder=str(write_cover_folder(tmp_path / "my-covers-dev", genres=2, per_genre=2, size=16)))
    check_output_folders(mine)  # a name no named dataset takes: the folder's own
    assert mine.dataset_name == "my-covers-dev" and mine.out_dir == Path("data/prepared/my-covers-dev-350")
