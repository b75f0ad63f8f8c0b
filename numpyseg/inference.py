"""Whole-image prediction: pad, forward in eval mode without caches, sigmoid, crop back.

The network halves the resolution three times, so its input sides must be
multiples of 8.  An image of any size is therefore zero-padded at the bottom
and right (to a multiple of 8, or to a dataset's fixed size such as DRIVE's
592 x 592), run through the model, and the probability map is cropped back to
the input's size:

    x_pad = pad(x)                       (H', W', 3), H' and W' multiples of 8
    z     = model(x_pad[None])[0, :, :, 0]   logits (H', W')
    p     = sigmoid(z)[:H, :W]           vessel probability of every input pixel

Padding only at the bottom/right keeps pixel (y, x) at (y, x), so the crop is
exact.  The model runs with `model.eval()` (DropBlock off, BatchNorm on its
running statistics) under `no_grad()` (no backward caches kept), and its
previous train/eval mode is restored afterwards.

Very large photographs (thousands of pixels a side) can be predicted in tiles
(`tile=T`): overlapping T x T windows whose logits are blended with weights
that fall off linearly over the overlap, so no seam is visible.  GroupNorm
normalises over the whole input, so a tiled prediction is close to, but not
bit-identical with, a whole-image one.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from numpyseg.data.padding import crop_to, default_pad_size, next_multiple, pad_to
from numpyseg.layers.module import no_grad

#: Where `numpyseg evaluate` / `numpyseg predict` look for weights when none are given.
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "sa_unetv2_drive.npz"


def load_model(path):
    """Build the model a checkpoint describes and load its weights; returns (model, checkpoint).

    Raises:
        CheckpointError: one line naming the file (missing, corrupt, unknown
            architecture, weights that do not fit).
    """
    from numpyseg.checkpoint import CheckpointError, load_checkpoint, restore
    from numpyseg.models.unet import build_model

    checkpoint = load_checkpoint(path)
    try:
        model = build_model(checkpoint.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: cannot build its model from config "
                              f"{checkpoint.config} ({' '.join(str(error).split())})") from None
    restore(model, checkpoint)
    model.eval()
    return model, checkpoint


def dataset_pad_size(dataset: str, shapes=()):
    """The padded size for whole-image prediction on a dataset, as the authors did.

    DRIVE -> (592, 592), STARE -> (704, 704); other datasets (or images that do not
    fit those sizes) -> None, meaning: pad each image to the next multiple of 8.
    """
    try:
        size = default_pad_size(dataset)
    except ValueError:
        return None
    if any(h > size[0] or w > size[1] for h, w in shapes):
        return None
    return size


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^{-z}), written so that no exp overflows; keeps the float dtype."""
    z = np.asarray(z)
    with np.errstate(under="ignore", over="ignore"):
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0, e).astype(z.dtype, copy=False) / (1.0 + e)


def padded_shape(shape, pad_size=None, multiple: int = 8) -> tuple[int, int]:
    """The (H', W') an image of size `shape` (H, W) is padded to before the forward pass.

    Args:
        shape: (H, W) of the image.
        pad_size: None (each side rounded up to a multiple of `multiple`), an int
            (a square) or (H', W'): a fixed size such as DRIVE's 592.
        multiple: 8 for the three-level U-Nets.

    Raises:
        ValueError: `pad_size` is smaller than the image or not a multiple of `multiple`.
    """
    h, w = int(shape[0]), int(shape[1])
    if pad_size is None:
        return next_multiple(h, multiple), next_multiple(w, multiple)
    ph, pw = (int(pad_size), int(pad_size)) if np.ndim(pad_size) == 0 else map(int, pad_size)
    if ph % multiple or pw % multiple:
        raise ValueError(f"pad size {ph}x{pw} must be a multiple of {multiple} on both sides")
    if h > ph or w > pw:
        raise ValueError(f"image of size {h}x{w} (HxW) does not fit the pad size {ph}x{pw}")
    return ph, pw


@contextmanager
def evaluation_mode(model):
    """Put `model` in eval mode without caches; restore its previous mode afterwards."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        model.train(was_training)


def _as_image_list(images):
    """(H, W, 3) -> ([image], True); (N, H, W, 3) or a list -> (list, False)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images], True
        if images.ndim == 4:
            return list(images), False
        raise ValueError(f"expected an image (H, W, 3) or a batch (N, H, W, 3), got shape {images.shape}")
    images = list(images)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"image {i}: expected shape (H, W, C), got {image.shape}")
    return images, False


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    """Window starts covering [0, size) with windows of `tile` and stride <= `step`."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _blend_weights(height: int, width: int, overlap: int, dtype) -> np.ndarray:
    """(height, width) weights rising linearly from the border over `overlap` pixels."""
    def ramp(n):
        i = np.arange(n, dtype=np.float64)
        if overlap <= 0:
            return np.ones(n)
        return np.clip(np.minimum(i + 0.5, n - i - 0.5) / overlap, 1e-3, 1.0)
    return np.outer(ramp(height), ramp(width)).astype(dtype)


def _forward_logits(model, batch: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> logits (N, H, W), in whatever mode the caller has set."""
    out = model(batch)
    return out[..., 0]


def _tiled_logits(model, image: np.ndarray, tile: int, overlap: int, batch_size: int) -> np.ndarray:
    """Blended logits (H', W') of a padded image (H', W', C) from overlapping tiles."""
    height, width = image.shape[:2]
    th, tw = min(tile, height), min(tile, width)
    step_h, step_w = max(th - overlap, 8), max(tw - overlap, 8)
    corners = [(y, x) for y in _tile_starts(height, th, step_h) for x in _tile_starts(width, tw, step_w)]
    weights = _blend_weights(th, tw, overlap, np.float64)
    total = np.zeros((height, width), dtype=np.float64)
    norm = np.zeros((height, width), dtype=np.float64)
    for first in range(0, len(corners), batch_size):
        group = corners[first:first + batch_size]
        batch = np.stack([image[y:y + th, x:x + tw] for y, x in group])
        logits = _forward_logits(model, batch)
        for (y, x), z in zip(group, logits):
            total[y:y + th, x:x + tw] += weights * z
            norm[y:y + th, x:x + tw] += weights
    return (total / norm).astype(image.dtype)


def predict_logits(model, images, *, pad_size=None, multiple: int = 8, batch_size: int = 1,
                   tile: int | None = None, overlap: int = 32, dtype=np.float32):
    """Logits of every pixel of one or more images of any size.

    Args:
        model: a numpyseg model, (N, H, W, C) -> logits (N, H, W, 1).
        images: one image (H, W, C), a batch (N, H, W, C) or a list of images of
            possibly different sizes; values as the model was trained on
            (float in [0, 1]).
        pad_size: None (pad each image to the next multiple of `multiple`), an int or
            (H', W') (a dataset's fixed padded size, e.g. 592 for DRIVE).
        batch_size: how many images (or tiles) go through the network at once;
            images with the same padded size are batched together.
        tile: None for whole-image prediction, else the side (a multiple of
            `multiple`) of the overlapping windows used for very large images.
        overlap: overlap of neighbouring tiles in pixels.
        dtype: the dtype the images are cast to (the model's dtype).

    Returns:
        For one image (H, W, C): logits (H, W).  Otherwise a list of (H_i, W_i)
        arrays (a (N, H, W) array when the input was one 4-D batch).
    """
    items, single = _as_image_list(images)
    batch_size = max(int(batch_size), 1)
    if tile is not None:
        tile = int(tile)
        if tile <= 0 or tile % multiple:
            raise ValueError(f"tile size must be a positive multiple of {multiple}, got {tile}")
        if not 0 <= int(overlap) < tile:
            raise ValueError(f"tile overlap must be in [0, {tile}), got {overlap}")
    shapes = [np.asarray(image).shape[:2] for image in items]
    targets = [padded_shape(shape, pad_size, multiple) for shape in shapes]
    results: list[np.ndarray | None] = [None] * len(items)
    with evaluation_mode(model):
        if tile is not None:
            for i, image in enumerate(items):
                padded = pad_to(np.asarray(image, dtype=dtype), targets[i])
                results[i] = crop_to(_tiled_logits(model, padded, tile, int(overlap), batch_size),
                                     shapes[i])
        else:
            # Batch images that share a padded size, in input order within each size.
            by_size: dict[tuple[int, int], list[int]] = {}
            for i, target in enumerate(targets):
                by_size.setdefault(target, []).append(i)
            for target, indices in by_size.items():
                for first in range(0, len(indices), batch_size):
                    chunk = indices[first:first + batch_size]
                    batch = np.stack([pad_to(np.asarray(items[i], dtype=dtype), target) for i in chunk])
                    logits = _forward_logits(model, batch)
                    for i, z in zip(chunk, logits):
                        results[i] = np.ascontiguousarray(crop_to(z, shapes[i]))
    if single:
        return results[0]
    if isinstance(images, np.ndarray):
        return np.stack(results)
    return results


def predict_proba(model, images, **options):
    """Vessel probabilities sigmoid(logits) in [0, 1]; arguments as `predict_logits`.

    >>> prob = predict_proba(model, read_image("01_test.tif"), pad_size=592)  # (584, 565)
    """
    logits = predict_logits(model, images, **options)
    if isinstance(logits, list):
        return [sigmoid(z) for z in logits]
    return sigmoid(logits)
