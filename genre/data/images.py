"""Decode one image file into a square RGB array: the only place that knows Pillow's quirks.

Every function here is pure (a path or image in, an array out) so it can run in worker processes
and be tested on images the tests make.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from genre.runtime import keep_freed_memory

keep_freed_memory()  # process-wide: each decoded cover would otherwise fault its buffers' pages in anew

# Covers are a few hundred pixels a side; anything past these limits is a mistake or an attack.
MAX_PIXELS = 40_000_000
MAX_SIDE = 20_000
# Transparent areas are laid on white, as a cover viewer would show them.
BACKGROUND = (255, 255, 255)
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class InvalidImage(Exception):
    """The file cannot be used as an image; the message is the reason shown in the report."""


@dataclass(frozen=True)
class DecodeOutcome:
    """What a worker sends back: the pixels `(size, size, 3)` uint8, or the reason they are missing."""

    pixels: np.ndarray | None
    reason: str | None = None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (grayscale, 16-bit, CMYK, palette, alpha) to 8-bit RGB."""
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's own convert clips 16-bit values at 255; scale the full range down instead.
        wide = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if wide.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(wide * (255.0 / scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" or image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, BACKGROUND)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB") if image.mode != "RGB" else image


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square (keeping the aspect of the art), then resize to `size` x `size`."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if width != height:
        image = image.crop((left, top, left + side, top + side))  # no filter taps outside the square
    return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)


def decode_image(source: Path | bytes, size: int) -> np.ndarray:
    """Decode a file (or encoded bytes) to `(size, size, 3)` uint8 pixels; raise `InvalidImage` with a reason."""
    if isinstance(source, bytes | bytearray):
        byte_count, opened = len(source), io.BytesIO(source)
    else:
        try:
            byte_count, opened = source.stat().st_size, source
        except OSError as error:
            raise InvalidImage(f"cannot read file ({error.strerror})") from error
    if byte_count == 0:
        raise InvalidImage("empty file (0 bytes)")
    # Importing gluoncv switches this on for the whole process (gluoncv/data/mhp.py); truncated covers must fail.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise InvalidImage(f"decompression bomb: {width}x{height} pixels is over the {MAX_PIXELS:,} limit")
                if max(width, height) > MAX_SIDE or min(width, height) < 1:
                    raise InvalidImage(f"absurd dimensions {width}x{height}")
                # JPEG can decode straight at a reduced scale: much faster and as sharp once resized.
                image.draft("RGB", (size, size))
                image.load()
                oriented = ImageOps.exif_transpose(image)
                pixels = np.asarray(square_resize(to_rgb(oriented), size), dtype=np.uint8)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImage(f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise InvalidImage("not an image (Pillow cannot identify the format)") from error
    except OSError as error:
        message = str(error)
        if "truncated" in message or "broken data stream" in message:
            raise InvalidImage(f"truncated image data ({message})") from error
        raise InvalidImage(f"undecodable image ({message})") from error
    except (SyntaxError, ValueError, TypeError, IndexError, EOFError) as error:
        raise InvalidImage(f"corrupt image ({type(error).__name__}: {error})") from error
    if pixels.shape != (size, size, 3):
        raise InvalidImage(f"unexpected decoded shape {pixels.shape}")
    return pixels


def decode_outcome(path: Path, size: int) -> DecodeOutcome:
    """`decode_image` for a worker process: never raises for a bad file."""
    try:
        return DecodeOutcome(decode_image(path, size))
    except InvalidImage as error:
        return DecodeOutcome(None, str(error))


def png_bytes(pixels: np.ndarray) -> bytes:
    """One cover's `(S, S, 3)` uint8 pixels as PNG bytes (a logged model's input example)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def base64_image_bytes(text: str) -> bytes:
    """The bytes of base64 `text` (an image as JSON carries it), or `InvalidImage`."""
    try:
        # MLflow's own encoder (`base64.encodebytes`) breaks lines every 76 characters.
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImage(f"not an image (text that is not base64: {error})") from None


def resized_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """`(H, W, 3)` uint8 pixels as `(size, size, 3)`, centre-cropped and resized as decoding does; `InvalidImage` for
    an array that is not an RGB image."""
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise InvalidImage(f"not an image (expected (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape})")
    if pixels.shape[:2] == (size, size):
        return pixels
    return np.asarray(square_resize(Image.fromarray(pixels, "RGB"), size), dtype=np.uint8)
