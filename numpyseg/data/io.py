"""Reading and writing images, labels and masks with Pillow.

Every reader returns plain NumPy arrays in one fixed convention, whatever the
file format:

    read_image(path) -> float32 (H, W, 3), values in [0, 1]
    read_label(path) -> uint8   (H, W),    values in {0, 1}
    read_mask(path)  -> uint8   (H, W),    values in {0, 1}

Formats: anything Pillow decodes (PNG, JPEG, TIFF, PPM/PGM, GIF, BMP, ...) and
the same files compressed with gzip (``im0001.ppm.gz`` as STARE ships them).

The reading rules (README, "How files are read"):

1. Orientation.  Pixels are returned as a viewer shows them: the EXIF
   Orientation tag (0x0112, values 1-8, written by phones and cameras) is
   applied (`PIL.ImageOps.exif_transpose`) to images, labels and masks alike.
2. Value range (`unit_range`).  8-bit data is divided by 255.  Integer data
   of more than 8 bits (16-bit PNG / TIFF) is divided by 2^b - 1 for the
   smallest b of 8, 10, 12, 14, 16 (then 24, 32) that holds its maximum, so
   12-bit camera data stored in 16-bit files and 8-bit data saved as 16-bit
   both come out right.  Float data with maximum <= 1 is taken as [0, 1],
   <= 255 as 0..255, <= 65535 as 0..65535.  When the range was chosen from
   the data rather than the file's type, a `DataWarning` says what was
   assumed.  NaN, infinite or negative values are refused.
3. Colour.  `read_image` converts every colour mode to RGB (greyscale is
   repeated into 3 channels; CMYK, YCbCr, LAB, HSV are converted; an alpha
   channel or palette transparency is ignored: the stored colour is used).
4. Labels and masks (`read_levels`, `binarise`).  The grey level of a pixel is
   its brightest colour channel (for palette images: of its palette colour),
   so 0/255 grey, 0/1, white or coloured strokes on black, and palettes in
   any index order all read alike.  An alpha channel is composited over
   black (transparent = background).  The grey level is scaled to [0, 1] by
   rule 2, except that integer data whose maximum is 1 is 0/1 data; a pixel
   is foreground when its scaled grey level is above one half.  A label or
   mask with more than two grey levels (JPEG compression, resizing) is
   warned about, as is a label more than half of which is vessel (inverted?).
5. Size.  Images above `max_pixels()` (100 megapixels unless the environment
   variable ``NUMPYSEG_MAX_PIXELS`` says otherwise) are refused before they
   are decoded.

A file that is missing, empty, a folder, not an image, truncated, corrupt,
too large or of an unusable mode raises `DataError` (a ValueError) with a
one-line message naming the file and the problem.  The image is fully decoded
(``Image.load()``) inside the reader, because Pillow opens files lazily and
would otherwise report a truncated file much later.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from numpyseg.atomic import atomic_write
from numpyseg.errors import DataError, DataWarning  # noqa: F401  (re-exported)

IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
    ".gif", ".bmp", ".webp",
)

#: Environment variable that raises (or lowers) the largest image read, in pixels.
MAX_PIXELS_ENV = "NUMPYSEG_MAX_PIXELS"
#: Default limit: 100 megapixels (fundus photographs have at most a few tens).
DEFAULT_MAX_PIXELS = 100_000_000

#: Bit depths tried, smallest first, for integer data of more than 8 bits (rule 2).
BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)
#: Float data: the ranges tried, smallest first (rule 2).
FLOAT_RANGES = (1.0, 255.0, 65535.0)

#: A pixel is "grey" when its scaled value lies strictly between these bounds.
GREY_BOUNDS = (0.1, 0.9)
#: An image with more grey pixels than this fraction is a photograph, not a label or mask.
PHOTOGRAPH_GREY_FRACTION = 0.25
#: A label with a larger vessel fraction than this is warned about (inverted?).
VESSEL_WARN_FRACTION = 0.5


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


def warn_data(message: str) -> None:
    """Issue a one-line `DataWarning` (shown on stderr, once per message)."""
    warnings.warn(message, DataWarning, stacklevel=3)


# ----------------------------------------------------------------------------- opening


def max_pixels() -> int:
    """The largest image read, in pixels: $NUMPYSEG_MAX_PIXELS, else DEFAULT_MAX_PIXELS.

    Raises:
        DataError: the variable is set but is not a positive integer.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise DataError(f"{MAX_PIXELS_ENV}={value!r} is not a positive whole number of pixels")
    return limit


def _file_bytes(path: Path) -> io.BytesIO:
    """The file's bytes (gunzipped for ``.gz``), read whole so no file handle stays open."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    return io.BytesIO(data)


def _open(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file (gzip-compressed or not), in displayed orientation.

    The first frame only (GIF / TIFF).  The EXIF Orientation tag is applied
    (`PIL.ImageOps.exif_transpose`).  Pillow's own size limit
    (Image.MAX_IMAGE_PIXELS, a warning then an error) is lifted while the file
    is decoded: the size is compared with `max_pixels()` from the header,
    before any pixel is decoded.

    Raises:
        DataError: missing, a folder, empty, not an image, truncated, corrupt,
            or larger than `max_pixels()`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes): copy it again")
    limit = max_pixels()
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(_file_bytes(path))  # reads the header only
        width, height = image.size
        if width * height > limit:
            raise DataError(f"{path}: image is too large ({width}x{height} = {width * height / 1e6:.0f} "
                            f"megapixels, limit {limit / 1e6:.0f}): resize it, or set {MAX_PIXELS_ENV} "
                            f"to a larger number of pixels")
        # Pillow decodes lazily: load() forces the full decode now, so a
        # truncated or corrupt file fails here with its name attached.
        image.load()
        return ImageOps.exif_transpose(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, EOFError, zlib.error, ValueError, SyntaxError, KeyError) as error:
        # gzip.BadGzipFile and "image file is truncated" are OSErrors.
        raise DataError(f"{path}: cannot decode image ({_one_line(error)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


def _to_array(image: Image.Image, path) -> np.ndarray:
    """Decoded pixels as an array of shape (H, W) or (H, W, C), native dtype."""
    try:
        return np.asarray(image)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot decode image ({_one_line(error)})") from None


def _convert(image: Image.Image, mode: str, path) -> Image.Image:
    """image.convert(mode), with Pillow's refusal turned into a one-line DataError."""
    try:
        return image.convert(mode)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot convert image mode {image.mode} to {mode} "
                        f"({_one_line(error)}): save it as 8-bit RGB or greyscale") from None


# ----------------------------------------------------------------------------- value range


def _integer_scale(maximum: int, nominal_bits: int) -> int:
    """Rule 2 for integer data of more than 8 bits: 2^b - 1, b the smallest of BIT_DEPTHS holding `maximum`."""
    for bits in BIT_DEPTHS:
        if maximum <= 2 ** bits - 1 or bits >= nominal_bits:
            return 2 ** bits - 1
    return 2 ** BIT_DEPTHS[-1] - 1


def unit_range(array: np.ndarray, path, *, binary_01: bool = False) -> np.ndarray:
    """Pixels of any dtype -> float32 in [0, 1] by the value-range rule (module docstring, rule 2).

    Args:
        array: (H, W) or (H, W, C) pixels as Pillow decodes them: bool, uint8,
            uint16 (modes I;16*), int32 (mode I) or float32 (mode F).
        path: the file, for messages.
        binary_01: integer data whose maximum is 1 is 0/1 data (labels and
            masks), not nearly black.

    Returns:
        float32 array of the same shape, values in [0, 1].

    Raises:
        DataError: NaN, infinite or negative values, or floats above 65535.

    Warns:
        DataWarning: when the range was chosen from the data (more-than-8-bit
        integers or floats outside [0, 1]).
    """
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"{path}: {bad} pixels are NaN or infinite: fix or re-export the image")
    if array.size == 0:
        return array.astype(np.float32)
    low, high = array.min(), array.max()
    if low < 0:
        raise DataError(f"{path}: pixel values range from {low:g} to {high:g}, negative values are not "
                        f"intensities: save the image as 8-bit or 16-bit, or as floats in [0, 1]")
    if binary_01 and array.dtype.kind in "iu" and high <= 1:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype.kind in "iu":
        nominal = 16 if array.dtype.itemsize == 2 or high <= 65535 else 32
        scale = _integer_scale(int(high), nominal)
        if scale != 2 ** nominal - 1 and high > 0:
            bits = scale.bit_length()
            warn_data(f"{path}: {nominal}-bit image with maximum {high}: read as {bits}-bit data "
                      f"(divided by {scale})")
        return (array.astype(np.float64) / scale).astype(np.float32)
    for scale in FLOAT_RANGES:
        if high <= scale:
            if scale != 1.0:
                warn_data(f"{path}: float image with maximum {high:g}: read as 0..{scale:g} "
                          f"(divided by {scale:g})")
            return (array.astype(np.float64) / scale).astype(np.float32)
    raise DataError(f"{path}: float pixel values up to {high:g} fit none of the ranges 0..1, 0..255, "
                    f"0..65535: rescale the image")


# ----------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour fundus image as float32 (H, W, 3) with values in [0, 1].

    Rules 1-3 and 5 of the module docstring: displayed orientation; values
    scaled by the file's type (or, for 16-bit integer and float data, by the
    range its data fits, with a warning); greyscale repeated into 3 channels,
    palette expanded, CMYK / YCbCr / LAB / HSV converted to RGB, alpha and
    palette transparency ignored.

    Raises:
        DataError: the file is missing, unreadable, truncated, corrupt, too
            large, holds NaN / infinite / negative values, or has a mode that
            cannot be converted to RGB.
    """
    image = _open(path)
    mode = image.mode
    if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16"):
        if mode in ("1", "LA", "La"):
            image = _convert(image, "L", path)
    elif mode not in ("RGB", "RGBA", "RGBX", "RGBa"):
        image = _convert(image, "RGBA" if mode in ("P", "PA") else "RGB", path)
    array = _to_array(image, path)
    if array.ndim == 3:
        array = array[:, :, :3]
    values = unit_range(array, path)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    if values.ndim != 3 or values.shape[2] != 3:
        raise DataError(f"{path}: unsupported image layout {array.shape} (mode {mode})")
    return np.ascontiguousarray(values, dtype=np.float32)


# ----------------------------------------------------------------------------- labels and masks


def grey_fraction(values: np.ndarray) -> float:
    """Fraction of pixels that are grey: neither black nor white (nor a pure colour).

    A pixel is grey when any of its channels lies strictly inside GREY_BOUNDS
    (0.1, 0.9).  So black, white and pure colours such as red strokes count as
    not grey, while the mid-tone retina of a photograph (even where its red
    channel saturates) counts as grey.

    Args:
        values: float (H, W) grey levels or (H, W, C) colour, in [0, 1].
    """
    values = np.asarray(values)
    if values.size == 0:
        return 0.0
    low, high = GREY_BOUNDS
    grey = (values > low) & (values < high)
    if grey.ndim == 3:
        grey = grey.any(axis=2)
    return float(np.count_nonzero(grey)) / grey.size


def is_photograph(values: np.ndarray) -> bool:
    """True when more than PHOTOGRAPH_GREY_FRACTION of the pixels are grey.

    A fundus photograph has a retina of many mid-tone levels; a label or a
    field-of-view mask is black and white (with at most a thin grey rim from
    compression or resizing).  `values`: as for `grey_fraction`.
    """
    return grey_fraction(values) > PHOTOGRAPH_GREY_FRACTION


def read_levels(path: str | os.PathLike) -> np.ndarray:
    """Read a label or mask file as float32 (H, W, C) levels in [0, 1], before thresholding.

    C is 1 for greyscale files and 3 for colour and palette files (a palette
    index becomes its palette colour).  An alpha channel or palette
    transparency is composited over black (transparent = 0).  Values are
    scaled by `unit_range` with ``binary_01=True`` (integer data whose maximum
    is 1 stays 0/1).  The grey level of rule 4 is ``levels.max(axis=2)``.

    Raises:
        DataError: as `read_image`.
    """
    image = _open(path)
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        image = _convert(image, "RGBA", path)  # palette colours, with their transparency as alpha
    alpha = None
    if image.mode in ("RGBA", "RGBa", "LA", "La"):
        alpha = unit_range(_to_array(image.getchannel("A"), path), path)
        image = _convert(image, "RGB" if image.mode.startswith("RGB") else "L", path)
    if image.mode not in ("1", "L", "I", "F", "RGB") and not image.mode.startswith("I;16"):
        image = _convert(image, "RGB", path)  # P (palette lookup), CMYK, YCbCr, LAB, HSV, ...
    array = _to_array(image, path)
    if array.ndim == 2:
        array = array[:, :, None]
    values = unit_range(array, path, binary_01=True)
    if alpha is not None:
        values = values * alpha[:, :, None]
    return values


def binarise(grey: np.ndarray, path, what: str = "label") -> np.ndarray:
    """Grey levels in [0, 1] -> uint8 (H, W) of 0/1: 1 where the level is above one half.

    Warns (`DataWarning`) when the file has more than two grey levels (it is
    not black and white: JPEG compression, resizing, anti-aliasing) and, for
    labels, when more than VESSEL_WARN_FRACTION of the pixels are foreground
    (an inverted label, vessels dark on white?).
    """
    binary = (grey > 0.5).astype(np.uint8)
    levels = np.unique(grey).size
    if levels > 2:
        warn_data(f"{path}: the {what} has {levels} grey levels, not 2 ({100 * grey_fraction(grey):.1f} % of its "
                  f"pixels are grey; lossy compression or resizing?): thresholded at half; keep {what}s "
                  f"as PNG or GIF")
    if what == "label" and binary.size and binary.mean() > VESSEL_WARN_FRACTION:
        warn_data(f"{path}: {100 * binary.mean():.0f} % of the label is vessel: is it inverted? "
                  f"numpyseg reads bright pixels as vessel")
    return binary


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a vessel label as uint8 (H, W) with values 0 (background) / 1 (vessel).

    Rule 4 of the module docstring: the brightest channel (of the palette
    colour, for palette images), alpha composited over black, scaled to
    [0, 1] by the file's type (0/1 integer data as is), vessel where above
    one half.  So 0/255, 0/1, 16-bit, palettes in either index order,
    JPEG-compressed and resized labels all read right; the last two are
    warned about, as is a label that is more than half vessel.

    Raises:
        DataError: the file is missing, unreadable, truncated or corrupt.
    """
    return binarise(read_levels(path).max(axis=2), path, "label")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a field-of-view mask as uint8 (H, W): 1 inside the FOV, 0 outside.

    Same rule as `read_label` (bright = inside); no warning for a large area.
    """
    return binarise(read_levels(path).max(axis=2), path, "mask")


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
