"""Zero-padding at the bottom/right and the exact inverse crop.

The network halves the resolution three times, so its input sides must be
multiples of 8.  The authors pad DRIVE's 584 x 565 (H x W) images with zeros at
the bottom and right to 592 x 592 and STARE's 605 x 700 images to 704 x 704;
predictions are cropped back to the original size before scoring.  Padding
only at the bottom/right keeps pixel (y, x) at (y, x), so the inverse is a
plain crop ``array[:h, :w]``.

Spatial axes: (0, 1) for 2-D (H, W) and 3-D (H, W, C) arrays, (1, 2) for 4-D
batches (N, H, W, C).  Pass ``axes`` explicitly for anything else (for example
``axes=(1, 2)`` for a stack of masks (N, H, W)).
"""

from __future__ import annotations

import numpy as np

#: Padded sizes (H, W) used by the authors.
PAD_SIZES = {"drive": (592, 592), "stare": (704, 704)}


def _axes(array: np.ndarray, axes) -> tuple[int, int]:
    if axes is not None:
        return tuple(int(a) % array.ndim for a in axes)
    if array.ndim in (2, 3):
        return (0, 1)
    if array.ndim == 4:
        return (1, 2)
    raise ValueError(f"cannot tell the spatial axes of an array of shape {array.shape}: pass axes=(ay, ax)")


def _size(size) -> tuple[int, int]:
    if np.ndim(size) == 0:
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def pad_to(array: np.ndarray, size, axes=None) -> np.ndarray:
    """Zero-pad at the bottom/right to size (H, W) (an int means a square).

    out[:h, :w] = array; out elsewhere = 0.  Raises ValueError if the array is
    larger than the target along either axis.
    """
    array = np.asarray(array)
    ay, ax = _axes(array, axes)
    height, width = _size(size)
    h, w = array.shape[ay], array.shape[ax]
    if h > height or w > width:
        raise ValueError(f"cannot pad an array of size {h}x{w} (HxW) to the smaller size {height}x{width}")
    pad = [(0, 0)] * array.ndim
    pad[ay] = (0, height - h)
    pad[ax] = (0, width - w)
    if height == h and width == w:
        return array
    return np.pad(array, pad, mode="constant")


def next_multiple(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-int(n) // int(multiple)) * int(multiple)


def pad_to_multiple(array: np.ndarray, multiple: int = 8, axes=None) -> np.ndarray:
    """Zero-pad at the bottom/right so both spatial sides are multiples of `multiple`."""
    array = np.asarray(array)
    ay, ax = _axes(array, axes)
    size = (next_multiple(array.shape[ay], multiple), next_multiple(array.shape[ax], multiple))
    return pad_to(array, size, axes=(ay, ax))


def crop_to(array: np.ndarray, shape, axes=None) -> np.ndarray:
    """Keep the top-left (h, w) block: the exact inverse of `pad_to` / `pad_to_multiple`.

    ``crop_to(pad_to(a, s), a.shape[:2])`` equals ``a``.
    """
    array = np.asarray(array)
    ay, ax = _axes(array, axes)
    height, width = _size(shape[:2] if np.ndim(shape) and len(shape) > 2 else shape)
    if height > array.shape[ay] or width > array.shape[ax]:
        raise ValueError(f"cannot crop an array of size {array.shape[ay]}x{array.shape[ax]} (HxW) "
                         f"to the larger size {height}x{width}")
    index = [slice(None)] * array.ndim
    index[ay] = slice(0, height)
    index[ax] = slice(0, width)
    return array[tuple(index)]


def default_pad_size(dataset: str, shape=None, multiple: int = 8) -> tuple[int, int]:
    """The padded input size (H, W) for a dataset.

    DRIVE -> (592, 592) and STARE -> (704, 704) as the authors did (square).
    Any other dataset: each side of `shape` (H, W) rounded up to a multiple of
    8, e.g. CHASE_DB1 960 x 999 -> 960 x 1000 (not square: a fully
    convolutional network does not need a square input).

    Args:
        dataset: 'drive', 'stare', 'chase', 'synthetic', 'folder', ... (case-insensitive).
        shape: (H, W) of the images; required for datasets other than DRIVE/STARE.
    """
    key = str(dataset).lower()
    if key in PAD_SIZES:
        return PAD_SIZES[key]
    if shape is None:
        raise ValueError(f"default_pad_size: dataset {dataset!r} has no fixed size; pass shape=(H, W)")
    return next_multiple(shape[0], multiple), next_multiple(shape[1], multiple)
