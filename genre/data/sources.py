"""Where images come from: a folder laid out `ROOT/<genre>/<file>`, or the bundled digits.

The manifest source downloads into such a folder first (see `download.py`), so every source reaches
the decoder as the same list of `SourceImage`s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genre.data.problems import Problem
from genre.errors import DataError

# Suffixes of files that are never images: partial downloads and our own temporaries.
TEMPORARY_SUFFIXES = (".part", ".tmp")
DIGITS_COUNT = 1797
DIGITS_SOURCE = "sklearn.datasets.load_digits"  # the bundled digits' `source` in dataset.json


@dataclass(frozen=True)
class SourceImage:
    """One image file; `relpath` is `genre/file` (posix), the name it keeps in splits and reports."""

    relpath: str
    path: Path

    @property
    def genre(self) -> str:
        return self.relpath.split("/", 1)[0]


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(TEMPORARY_SUFFIXES)


def check_image_folder(root: Path) -> None:
    """A one-line `DataError` unless `root` is a folder: one that is not there, or a file, is named as such."""
    layout = "pass --folder ROOT laid out ROOT/<genre>/<file>"
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; {layout}")
    if not root.is_dir():
        raise DataError(f"--folder {root} is a file, not a folder; {layout}")


def scan_folder(root: Path) -> tuple[list[SourceImage], list[Problem]]:
    """List every file under `root/<genre>/`, sorted by relpath.

    Files are not judged by their suffix here: the decoder decides what is an image, so a text file
    named `.jpg` (or a JPEG named `.txt`) is reported or used for what it is. Hidden files and
    temporaries are ignored; loose files at the top level are reported.
    """
    check_image_folder(root)
    images: list[SourceImage] = []
    problems: list[Problem] = []
    for entry in sorted(root.iterdir()):
        if not _visible(entry.name):
            continue
        if not entry.is_dir():
            problems.append(Problem("scan", entry.name, "file outside a genre folder (expected ROOT/<genre>/<file>)"))
            continue
        found = len(images)
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for filename in sorted(filenames):
                if _visible(filename):
                    path = Path(dirpath) / filename
                    images.append(SourceImage(path.relative_to(root).as_posix(), path))
        if len(images) == found:
            problems.append(Problem("scan", f"{entry.name}/", "empty genre folder: no genre without covers"))
    if not images:
        raise DataError(f"image folder {root} holds no files in genre subfolders; lay it out ROOT/<genre>/<file>")
    images.sort(key=lambda image: image.relpath)
    return images, problems


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as `(1797, 8, 8)` uint8 (0-255) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The pixel values are ink counts 0..16; stretch them to the 8-bit range, ink dark on white.
    pixels = 255 - np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return pixels, digits.target.astype(np.int64)


def render_digits(root: Path) -> Path:
    """Write the bundled digits as PNG files `root/<digit>/<index>.png`, so they take the covers' path.

    Idempotent: files are written atomically and existing ones are kept.
    """
    pixels, labels = digit_images()
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        path = root / str(label) / f"{index:04d}.png"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        Image.fromarray(image, "L").save(tmp, format="PNG")
        tmp.replace(path)
    return root
