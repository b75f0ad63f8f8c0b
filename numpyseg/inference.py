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

Very large images can be predicted in tiles (`tile=T`) to bound memory: each
T x T block is predicted inside a window grown by the network's receptive
radius, with every GroupNorm using the statistics of the whole image (gathered
in a first sweep), so the result equals the whole-image prediction
(`tiled_logits`).  `tta=True` averages the prediction over the 8 flips and
quarter turns of the image (`tta_proba`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from numpyseg.data.padding import crop_to, default_pad_size, next_multiple, pad_to
from numpyseg.layers.activations import sigmoid
from numpyseg.layers.module import no_grad
from numpyseg.validate import check_int

#: Where `numpyseg evaluate` / `numpyseg predict` look for weights when none are given.
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "sa_unetv2_drive.npz"

# The smallest tile side (pixels).  Every tile is predicted inside a margin of the receptive
# radius (112 px for SA-UNetv2), so a tile of T pixels costs about (T + 224)^2 / T^2 times its
# share of a whole-image pass: x9 at 112, x64 at 32.  Below 64 tiling only multiplies the work.
MIN_TILE = 64


def check_tile(value, option: str = "--tile") -> int:
    """A tile side for exact tiled prediction: a multiple of 8 pixels, at least MIN_TILE.

    Each tile is predicted inside a margin of the network's receptive radius, so
    small tiles multiply the work (see MIN_TILE).

    Raises:
        ConfigError: not a whole number, below MIN_TILE or not a multiple of 8.
    """
    return check_int(option, value, low=MIN_TILE, multiple=8)


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


class _SweepDone(Exception):
    """Raised inside a forward pass once the statistics being collected have their tile."""


class WholeImageStatistics:
    """GroupNorm statistics of the whole image, gathered tile by tile (see `tiled_logits`).

    Installed as `layer.whole_image` on every GroupNorm of the model.  A layer whose
    statistics are known is normalised with them (`GroupNorm.normalise_with`).  The
    first layer of the forward pass whose statistics are not yet known adds the
    tile's core to its running statistics and stops the forward pass (`_SweepDone`).

    Running statistics per group: count n, mean m and M2 = sum (x - m)^2, in float64,
    merged tile by tile with the parallel formula of Chan, Golub & LeVeque (1979):

        delta = m_b - m_a,   n = n_a + n_b
        m     = m_a + delta * n_b / n
        M2    = M2_a + M2_b + delta^2 * n_a * n_b / n

    and finally var = M2 / n (biased, as GroupNorm's), rstd = 1 / sqrt(var + eps).
    """

    def __init__(self):
        self.known: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # id(layer) -> (mean, rstd), (G,)
        self.collecting = None           # the layer whose statistics the current sweep gathers
        self.running = None              # its (n, mean, M2), each (G,) float64
        self.core = (0, 0, 0, 0)         # the current tile's core (y0, y1, x0, x1), window coordinates
        self.window = (1, 1)             # the current window's (H, W) at the input's resolution

    def normalise(self, layer, x: np.ndarray) -> np.ndarray:
        """GroupNorm.forward while installed: normalise x (1, h, w, C) or collect its statistics."""
        if id(layer) in self.known:
            mean, rstd = self.known[id(layer)]
            return layer.normalise_with(x, mean, rstd)
        if self.collecting is None:
            self.collecting = layer
        if layer is not self.collecting:
            raise RuntimeError("tiled inference: GroupNorm layers reached in a different order")
        self._add(layer, x)
        raise _SweepDone

    def _add(self, layer, x: np.ndarray) -> None:
        """Merge the statistics of the tile's core of x into the running ones."""
        scale = self.window[0] // x.shape[1]          # this layer's down-sampling factor
        y0, y1, x0, x1 = (c // scale for c in self.core)
        core = x[0, y0:y1, x0:x1].astype(np.float64).reshape(-1, layer.num_groups,
                                                           layer.num_channels // layer.num_groups)
        values = core.transpose(1, 0, 2).reshape(layer.num_groups, -1)   # (G, pixels * C/G)
        n_b = values.shape[1]
        m_b = values.mean(axis=1)
        m2_b = np.square(values - m_b[:, None]).sum(axis=1)
        if self.running is None:
            self.running = (n_b, m_b, m2_b)
            return
        n_a, m_a, m2_a = self.running
        n = n_a + n_b
        delta = m_b - m_a
        self.running = (n, m_a + delta * (n_b / n), m2_a + m2_b + np.square(delta) * (n_a * n_b / n))

    def finish_sweep(self) -> None:
        """Turn the running statistics of the swept layer into its (mean, rstd)."""
        layer = self.collecting
        n, mean, m2 = self.running
        self.known[id(layer)] = (mean, 1.0 / np.sqrt(m2 / n + layer.eps))
        self.collecting, self.running = None, None


def tile_layout(height: int, width: int, tile: int, halo: int):
    """Cores and windows of tiled inference over a padded (height, width) image.

    The cores are the `tile` x `tile` blocks (smaller at the bottom/right) that
    partition the image; each core's window is the core grown by `halo` pixels on
    every side, clipped to the image.  All corners are multiples of 8 when `tile`,
    `halo`, height and width are, so every window sees the same pooling grid as
    the whole image.

    Returns:
        A list of ((y0, y1, x0, x1) window, (y0, y1, x0, x1) core in window coordinates).
    """
    layout = []
    for cy in range(0, height, tile):
        for cx in range(0, width, tile):
            wy, wx = max(cy - halo, 0), max(cx - halo, 0)
            wy1, wx1 = min(cy + tile + halo, height), min(cx + tile + halo, width)
            core = (cy - wy, min(cy + tile, height) - wy, cx - wx, min(cx + tile, width) - wx)
            layout.append(((wy, wy1, wx, wx1), core))
    return layout


def _say(progress, message: str) -> None:
    if progress is not None:
        progress(message)


def tiled_logits(model, image: np.ndarray, tile: int, progress=None) -> np.ndarray:
    """Logits (H', W') of a padded image (H', W', C) computed tile by tile, equal to whole-image ones.

    Two things make a naive tiling differ from the whole image, and both are removed:

    1. Borders.  Logit (i, j) depends on the input within `model.receptive_radius()`
       pixels (110 for SA-UNetv2).  Each `tile` x `tile` core is therefore predicted
       inside a window grown by a halo of that radius (rounded up to a multiple of 8)
       and only the core is kept: no core pixel sees the window's artificial border.
    2. GroupNorm.  Its mean and variance are taken over the whole image, so a tile
       normalised on its own statistics comes out differently.  The whole image's
       statistics are gathered first, one GroupNorm layer at a time in forward
       order (each layer's input depends on the statistics of the layers before
       it): sweep k runs every window up to the k-th GroupNorm, normalising the
       first k - 1 with their now known whole-image statistics, and adds the k-th
       layer's input over the core to running sums (`WholeImageStatistics`).  After
       one sweep per GroupNorm, a last pass computes the logits with all of them.

    The result equals the whole-image prediction up to float32 rounding.  Memory is
    that of one (tile + 2 halo)^2 window; the work is one forward pass over the
    windows per GroupNorm layer, each stopped at that layer (about six whole passes
    for SA-UNetv2), plus the final one.  Models without GroupNorm (BatchNorm in eval
    mode) need only the final pass.

    Args:
        model: a UNet3 in eval mode under no_grad (see `evaluation_mode`).
        image: (H', W', C), H' and W' multiples of 8, in the model's dtype.
        tile: core side, a positive multiple of 8.
        progress: None or a callable taking one-line messages (one per sweep, one per tile
            of the final pass).
    """
    height, width = image.shape[:2]
    layout = tile_layout(height, width, tile, next_multiple(model.receptive_radius(), 8))
    statistics = whole_image_statistics(model, image, layout, progress)
    logits = np.empty((height, width), dtype=image.dtype)
    with normalised_with(model, statistics):
        for i, ((wy, wy1, wx, wx1), (y0, y1, x0, x1)) in enumerate(layout):
            _say(progress, f"tile {i + 1}/{len(layout)}")
            z = _forward_logits(model, image[None, wy:wy1, wx:wx1])[0]
            logits[wy + y0:wy + y1, wx + x0:wx + x1] = z[y0:y1, x0:x1]
    return logits


def _group_norms(model) -> list:
    from numpyseg.layers.norm import GroupNorm

    return [m for _, m in model.named_modules() if isinstance(m, GroupNorm)]


@contextmanager
def normalised_with(model, statistics: WholeImageStatistics):
    """Within the block every GroupNorm of `model` goes through `statistics` (see WholeImageStatistics)."""
    norms = _group_norms(model)
    for layer in norms:
        layer.whole_image = statistics
    try:
        yield model
    finally:
        for layer in norms:
            layer.whole_image = None


def whole_image_statistics(model, image: np.ndarray, layout=None, progress=None) -> WholeImageStatistics:
    """Every GroupNorm's statistics over the whole padded image (H', W', C), tile by tile.

    One sweep over the windows of `layout` (`tile_layout`; default: one window, the
    whole image) per GroupNorm layer, in forward order; see `tiled_logits`.
    """
    height, width = image.shape[:2]
    layout = layout or tile_layout(height, width, max(height, width), 0)
    statistics = WholeImageStatistics()
    sweeps = len(_group_norms(model))
    with normalised_with(model, statistics):
        for sweep in range(sweeps):
            _say(progress, f"GroupNorm statistics {sweep + 1}/{sweeps} ({len(layout)} tiles)")
            for (wy, wy1, wx, wx1), core in layout:
                statistics.core, statistics.window = core, (wy1 - wy, wx1 - wx)
                try:
                    model(image[None, wy:wy1, wx:wx1])
                except _SweepDone:
                    pass
            statistics.finish_sweep()
    return statistics


def _forward_logits(model, batch: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> logits (N, H, W), in whatever mode the caller has set."""
    out = model(batch)
    return out[..., 0]


def predict_logits(model, images, *, pad_size=None, multiple: int = 8, batch_size: int = 1,
                   tile: int | None = None, dtype=np.float32, progress=None):
    """Logits of every pixel of one or more images of any size.

    Args:
        model: a numpyseg model, (N, H, W, C) -> logits (N, H, W, 1).
        images: one image (H, W, C), a batch (N, H, W, C) or a list of images of
            possibly different sizes; values as the model was trained on
            (float in [0, 1]).
        pad_size: None (pad each image to the next multiple of `multiple`), an int or
            (H', W') (a dataset's fixed padded size, e.g. 592 for DRIVE).
        batch_size: how many images go through the network at once (whole-image
            prediction); images with the same padded size are batched together.
        tile: None for whole-image prediction, else the side (a multiple of
            `multiple`) of the blocks a large image is predicted in, to bound memory;
            the result is the whole-image one (see `tiled_logits`).
        dtype: the dtype the images are cast to (the model's dtype).
        progress: None or a callable taking one-line messages (tiled prediction
            reports every sweep and tile).

    Returns:
        For one image (H, W, C): logits (H, W).  Otherwise a list of (H_i, W_i)
        arrays (a (N, H, W) array when the input was one 4-D batch).

    Raises:
        ValueError: a tile size that is not a positive multiple of `multiple`; an
            image that does not fit `pad_size`.
    """
    items, single = _as_image_list(images)
    batch_size = max(int(batch_size), 1)
    if tile is not None:
        tile = int(tile)
        if tile <= 0 or tile % multiple:
            raise ValueError(f"tile size must be a positive multiple of {multiple}, got {tile}")
    shapes = [np.asarray(image).shape[:2] for image in items]
    targets = [padded_shape(shape, pad_size, multiple) for shape in shapes]
    results: list[np.ndarray | None] = [None] * len(items)
    with evaluation_mode(model):
        if tile is not None:
            for i, image in enumerate(items):
                padded = pad_to(np.asarray(image, dtype=dtype), targets[i])
                results[i] = crop_to(tiled_logits(model, padded, tile, progress), shapes[i])
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


def predict_proba(model, images, *, tta: bool = False, progress=None, **options):
    """Vessel probabilities sigmoid(logits) in [0, 1]; arguments as `predict_logits`.

    With `tta=True` each image is predicted under the 8 symmetries of the square
    (`DIHEDRAL`), each probability map is transformed back, and the 8 are averaged
    (test-time augmentation; 8 times the work).

    >>> prob = predict_proba(model, read_image("01_test.tif"), pad_size=592)  # (584, 565)
    """
    if tta:
        items, single = _as_image_list(images)
        probs = [tta_proba(model, image, progress=progress, **options) for image in items]
        if single:
            return probs[0]
        return np.stack(probs) if isinstance(images, np.ndarray) else probs
    logits = predict_logits(model, images, progress=progress, **options)
    if isinstance(logits, list):
        return [sigmoid(z) for z in logits]
    return sigmoid(logits)


# ------------------------------------------------------ test-time augmentation
#: The 8 symmetries of the square (the dihedral group D4) as (quarter turns k, flip):
#: g(x) = rot90(x, k) after a left-right flip when flip is True.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Apply a symmetry of the square to the first two axes of (H, W) or (H, W, C).

    g(x) = np.rot90(flip_lr(x) if flip else x, k): k counter-clockwise quarter turns.
    A quarter turn swaps H and W.
    """
    if flip:
        array = array[:, ::-1]
    return np.rot90(array, k, axes=(0, 1))


def undo_dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The inverse of `dihedral(., k, flip)`: turn back by k quarter turns, then un-flip."""
    array = np.rot90(array, -k, axes=(0, 1))
    return array[:, ::-1] if flip else array


def tta_proba(model, image: np.ndarray, *, progress=None, **options) -> np.ndarray:
    """Probabilities (H, W) averaged over the 8 symmetries of the square (see `DIHEDRAL`).

        p(x) = (1/8) sum_g g^-1( sigmoid(f(g(x))) )

    A model that commuted with every g would give its plain prediction back; the
    average removes the part of a real model's output that depends on orientation.
    Options are those of `predict_logits` (pad_size must be square or None, since
    a quarter turn swaps the sides).
    """
    total = None
    for i, (k, flip) in enumerate(DIHEDRAL):
        _say(progress, f"test-time augmentation {i + 1}/{len(DIHEDRAL)}")
        turned = np.ascontiguousarray(dihedral(np.asarray(image), k, flip))
        prob = sigmoid(predict_logits(model, turned, progress=progress, **options))
        back = undo_dihedral(prob, k, flip).astype(np.float64)
        total = back if total is None else total + back
    return (total / len(DIHEDRAL)).astype(np.float32)
