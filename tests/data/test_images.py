"""Decoding real image files of every awkward kind into square RGB arrays."""

from __future__ import annotations

import io
import platform
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genre.data.images import InvalidImage, decode_image, decode_outcome
from tests.conftest import jpeg_bytes


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_jpeg_is_resized_to_a_square_rgb_array(tmp_path: Path) -> None:
    path = tmp_path / "cover.jpg"
    path.write_bytes(jpeg_bytes((400, 300)))
    pixels = decode_image(path, 64)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(tmp_path: Path) -> None:
    path = save(Image.new("CMYK", (60, 40), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", format="JPEG")
    pixels = decode_image(path, 16).astype(int)
    red, green, blue = pixels[8, 8]
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    wide = np.full((30, 30), 32768, dtype=np.uint16)
    path = save(Image.fromarray(wide), tmp_path / "deep.png", format="PNG")
    assert Image.open(path).mode.startswith("I")
    pixels = decode_image(path, 8)
    assert np.all(np.abs(pixels.astype(int) - 128) <= 1)


def test_transparent_png_is_laid_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 10, 20))
    pixels = decode_image(save(image, tmp_path / "alpha.png", format="PNG"), 20)
    assert tuple(pixels[10, 2]) == (0, 0, 255)
    assert tuple(pixels[10, 17]) == (255, 255, 255)


def test_palette_gif_decodes_to_its_colours(tmp_path: Path) -> None:
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pixels = decode_image(save(image, tmp_path / "palette.gif", format="GIF"), 10)
    assert tuple(pixels[5, 5]) == (0, 200, 0)


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path: Path) -> None:
    pixels = decode_image(save(Image.new("L", (30, 30), 90), tmp_path / "gray.jpg", format="JPEG"), 10)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40x20, red left, blue right; orientation 6 shows it turned 90 degrees clockwise: red on top.
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_image(save(image, tmp_path / "turned.jpg", format="JPEG", exif=exif, quality=95), 20).astype(int)
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 2] < 60  # top: red
    assert pixels[17, 10, 2] > 200 and pixels[17, 10, 0] < 60  # bottom: blue


def test_non_square_cover_is_centre_cropped(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # the centre square is white
    pixels = decode_image(save(image, tmp_path / "wide.png", format="PNG"), 10)
    assert pixels.min() == 255


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.jpg", b"this is a text file, not a cover\n", "not an image"),
    ],
)
def test_non_images_are_refused_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidImage, match=reason):
        decode_image(path, 32)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = jpeg_bytes((300, 300), quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(path, 32)


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    path = save(Image.new("1", (20000, 20000)), tmp_path / "bomb.png", format="PNG")
    assert path.stat().st_size < 200_000  # tiny file, 400 megapixels
    with pytest.raises(InvalidImage, match="decompression bomb"):
        decode_image(path, 32)


def test_absurd_dimensions_are_refused(tmp_path: Path) -> None:
    path = save(Image.new("L", (25000, 2)), tmp_path / "strip.png", format="PNG")
    with pytest.raises(InvalidImage, match="absurd dimensions"):
        decode_image(path, 32)


def test_outcome_carries_the_reason_instead_of_raising(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + io.BytesIO(b"garbage").getvalue())
    outcome = decode_outcome(path, 32)
    assert outcome.pixels is None and outcome.reason


FAULTS_PER_COVER = """
import resource, sys
from pathlib import Path
import genre.runtime
if sys.argv[2] == "released":  # as in a process whose chunked iterator asked glibc to give large blocks back
    genre.runtime._released_large_blocks = True
from genre.data.images import decode_image
paths = sorted(Path(sys.argv[1]).glob("*.jpg"))
for path in paths[:10]:
    decode_image(path, 350)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for path in paths[10:]:
    decode_image(path, 350)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(paths[10:]))
"""


def faults_per_cover(folder: Path, mode: str) -> float:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_COVER, str(folder), mode], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc's thresholds are set through glibc's mallopt")
def test_decoding_covers_reuses_freed_memory_instead_of_faulting_it_in_again(tmp_path: Path) -> None:
    """A fresh process decoding 350-px covers faulted in ~500 pages (2 MB) per cover until `keep_freed_memory`:
    about a sixth of its CPU time (docs/benchmarks.md)."""
    rng = np.random.default_rng(7)
    for index in range(40):  # covers of different sizes: decoding the same file again never showed the faults
        pixels = rng.integers(0, 256, (350, 350, 3), dtype=np.uint8)
        pixels[:, : rng.integers(50, 300)] //= 8  # flat areas: each file compresses to a different size
        Image.fromarray(pixels).save(tmp_path / f"{index:02d}.jpg", quality=90)
    assert faults_per_cover(tmp_path, "kept") < 20
    assert faults_per_cover(tmp_path, "released") > 100  # what the test guards against, on this glibc
