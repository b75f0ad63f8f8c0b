"""Reading and writing images, labels and masks with Pillow.

Every reader returns plain NumPy arrays in one fixed convention, whatever the
file format:

    read_image(path) -> float32 (H, W, 3), values in [0, 1]
    read_label(path) -> uint8   (H, W),    values in {0, 1}
    read_mask(path)  -> uint8   (H, W),    values in {0, 1}

Formats: anything Pillow decodes (PNG, JPEG, TIFF, PPM/PGM, GIF, BMP, ...) and
the same files compressed with gzip (``im0001.ppm.gz`` as STARE ships them).

A file that is missing, not an image, truncated or corrupt raises `DataError`
(a ValueError) with a one-line message naming the file and the problem.  The
image is fully decoded (``Image.load()``) inside the reader, because Pillow
opens files lazily and would otherwise report a truncated file much later.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from numpyseg.atomic import atomic_write
from numpyseg.errors import DataError  # noqa: F401  (re-exported)

# Pillow refuses very large images by default ("decompression bomb"); fundus
# photographs are at most a few tens of megapixels, so the default is kept.

IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
    ".gif", ".bmp", ".webp",
)




def is_image_file(path: str | os.PathLike) -> bool:
    """True when the name ends in a known image suffix, optionally followed by ``.gz``."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(IMAGE_SUFFIXES)


def image_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix and without ``.gz``.

    ``im0001.ppm.gz`` -> ``im0001``; ``im0001.ah.ppm`` -> ``im0001.ah``;
    ``21_training.tif`` -> ``21_training``.
    """
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot else name


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def _open(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file (gzip-compressed or not); first frame only."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
            image = Image.open(io.BytesIO(data))
        else:
            image = Image.open(path)
        # Pillow decodes lazily: load() forces the full decode now, so a
        # truncated or corrupt file fails here with its name attached.
        image.load()
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, EOFError, zlib.error, ValueError, SyntaxError) as error:
        # gzip.BadGzipFile and "image file is truncated" are OSErrors.
        raise DataError(f"{path}: cannot decode image ({_one_line(error)})") from None
    return image


def _to_array(image: Image.Image, path) -> np.ndarray:
    """Decoded pixels as an array of shape (H, W) or (H, W, C), native dtype."""
    try:
        return np.asarray(image)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot decode image ({_one_line(error)})") from None


def _scale_to_unit(array: np.ndarray, mode: str) -> np.ndarray:
    """Integer or float pixels -> float32 in [0, 1].

    uint8 / 8-bit modes are divided by 255 and 16-bit modes (``I;16*``) by
    65535.  Pillow's 32-bit integer mode ``I`` usually holds 16-bit data, so it
    is divided by 65535 unless a value exceeds that range.  Float mode ``F`` is
    assumed to be in [0, 1] already and is clipped.
    """
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype.kind == "f":
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if mode.startswith("I;16") or array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    maximum = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(np.uint32).max)
    return np.clip(array.astype(np.float64) / maximum, 0.0, 1.0).astype(np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour fundus image as float32 (H, W, 3) with values in [0, 1].

    Grayscale images are repeated into 3 channels, the alpha channel of RGBA /
    LA images is dropped, palette images are expanded through their palette,
    CMYK / YCbCr are converted to RGB, 16-bit images are divided by 65535.

    Raises:
        DataError: the file is missing, unreadable, truncated or corrupt.
    """
    image = _open(path)
    mode = image.mode
    if mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        image = image.convert("RGB")
    elif mode in ("1", "LA", "La"):
        image = image.convert("L")
    array = _to_array(image, path)
    if array.ndim == 3 and array.shape[2] > 3:
        array = array[:, :, :3]
    values = _scale_to_unit(array, image.mode)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    if values.ndim != 3 or values.shape[2] != 3:
        raise DataError(f"{path}: unsupported image layout {array.shape} (mode {mode})")
    return np.ascontiguousarray(values, dtype=np.float32)


def _read_binary(path: str | os.PathLike, what: str) -> np.ndarray:
    """Any single- or multi-channel image -> uint8 (H, W) of 0/1 (see read_label)."""
    image = _open(path)
    if image.mode in ("P", "PA"):
        return _palette_to_binary(image, path)
    if image.mode in ("1", "LA", "La", "RGBA", "RGBa"):
        image = image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
    array = _to_array(image, path)
    if array.ndim == 3:
        # A colour label: a pixel is foreground when any channel is nonzero.
        array = array.max(axis=2)
    if array.ndim != 2:
        raise DataError(f"{path}: unsupported {what} layout {array.shape}")
    return (array != 0).astype(np.uint8)


def _palette_to_binary(image: Image.Image, path) -> np.ndarray:
    """Palette image -> 0/1 by the brightness of the palette entries actually used.

    DRIVE's 2nd_manual GIFs store index 0 = (4, 2, 4) and index 1 =
    (252, 254, 252): the *indices* are 0/1 but the colours are not exactly
    black, so "colour != 0" would mark every pixel.  The rule used: among the
    palette entries present in the image, those brighter than the midpoint of
    the darkest and brightest are foreground.  When the image uses a single
    brightness (an empty or a full mask), it is foreground when that
    brightness is >= 128 (of 255).
    """
    index = _to_array(image, path)
    if index.ndim == 3:  # PA: drop alpha
        index = index[:, :, 0]
    palette = image.getpalette() or []
    used = np.unique(index)
    colours = np.zeros((256, 3), dtype=np.float64)
    entries = np.asarray(palette[: 3 * (len(palette) // 3)], dtype=np.float64).reshape(-1, 3)[:256]
    colours[: len(entries)] = entries
    luminance = colours @ np.array([0.299, 0.587, 0.114])
    lum_used = luminance[used]
    if lum_used.max() - lum_used.min() < 1e-9:
        # One colour only (an empty or a full mask): bright means foreground.
        return np.full(index.shape, lum_used[0] >= 128, dtype=np.uint8)
    midpoint = 0.5 * (lum_used.max() + lum_used.min())
    return (luminance[index] > midpoint).astype(np.uint8)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a vessel label as uint8 (H, W) with values 0 (background) / 1 (vessel).

    Rule: any nonzero pixel is a vessel, so labels stored as 0/1, 0/255 or
    0/other all work; for colour labels a pixel is a vessel when any channel
    is nonzero.  Palette images are read through their palette (see
    `_palette_to_binary`), so DRIVE's 0/1 palette GIFs and 0/255 grayscale
    GIFs give the same result.  Labels saved as JPEG are not binary after
    compression and would be over-segmented by this rule: keep labels lossless.

    Raises:
        DataError: the file is missing, unreadable, truncated or corrupt.
    """
    return _read_binary(path, "label")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a field-of-view mask as uint8 (H, W): 1 inside the FOV, 0 outside.

    Same rule as `read_label` (any nonzero pixel is inside).
    """
    return _read_binary(path, "mask")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Array -> uint8 for saving: bool -> 0/255, float in [0, 1] -> round(255 x), uint8 as is."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind == "f":
        return np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise ValueError(f"write_png: integer values must lie in [0, 255], got range "
                             f"[{array.min()}, {array.max()}]; scale to float in [0, 1] first")
        return array.astype(np.uint8)
    raise ValueError(f"write_png: unsupported dtype {array.dtype}")


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an array as a PNG atomically (temporary file + os.replace).

    Args:
        path: destination; parent folders are created.
        array: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).  dtype bool is saved
            as 0/255, floats are taken to lie in [0, 1] and saved as
            round(255 x), uint8 as is (so a 0/1 uint8 label is saved as 0/1:
            pass ``label.astype(bool)`` for a visible black/white image).

    Returns:
        The destination path.  A reader never sees a half-written file: the PNG
        is written next to the destination and renamed over it in one step.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"write_png expects (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got shape {array.shape}")
    pixels = to_uint8(array)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return atomic_write(path, lambda f: image.save(f, format="PNG"))
