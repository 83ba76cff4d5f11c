"""Decode image bytes to RGB uint8, whatever the file's mode.

Grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB (alpha is dropped; 16-bit
values are scaled, not clipped); a GIF gives its first frame. A file that cannot be decoded
whole (corrupt, truncated, empty, not an image under an image name) raises
:class:`DecodeError`, so it can be skipped and reported rather than given features.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.locations import read_bytes


class DecodeError(Exception):
    """This file is not a decodable image."""


def decode_rgb(data: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB array of the image in ``data``."""
    if not data:
        raise DecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)  # first frame of an animation
                img.load()  # decode fully now: truncation must fail here, not later
                return _to_rgb(img)
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(str(e).split("\n")[0] or type(e).__name__) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(str(e).split("\n")[0] or type(e).__name__) from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit data is stored as I;16 or widened to I; scale its range down to 8 bits.
        top = 65535.0 if img.mode.startswith("I") else max(1.0, float(a.max()))
        a = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 1:
        raise DecodeError(f"unexpected decoded shape {arr.shape}")
    return arr


def decode_file(path: str) -> np.ndarray:
    """Decode the image at a path or an fsspec URL (:mod:`pipeline.data.locations`)."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from None
    return decode_rgb(data)
