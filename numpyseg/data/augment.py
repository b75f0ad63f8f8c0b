"""Random augmentation of (image, label, FOV) triples (batches: numpyseg.training.batches).

Geometric transforms move the image, the label and the FOV mask together
(labels and masks by nearest neighbour, so they stay 0/1; the image
bilinearly); photometric transforms change only the image.

    flip       left-right and up-down, each with probability 1/2
    rot90      a multiple of 90 degrees, k uniform in {0, 1, 2, 3}
               (on a non-square image, k odd swaps H and W)
    rotate     a small angle a ~ U(-rotate_degrees, +rotate_degrees) about the
               image centre c = ((H - 1) / 2, (W - 1) / 2); an output pixel q
               takes the value at the source point
                   s_y = c_y + cos(a) (q_y - c_y) + sin(a) (q_x - c_x)
                   s_x = c_x - sin(a) (q_y - c_y) + cos(a) (q_x - c_x)
               (a > 0 turns the picture counter-clockwise on screen; a = 90
               reproduces np.rot90), and 0 where s falls outside the image
    crop       a random patch of the given size; with crop_in_fov its centre is
               a random FOV pixel, so patches of mostly black background are rare
    brightness x <- x * (1 + U(-brightness, brightness))
    contrast   x <- m + (x - m) * (1 + U(-contrast, contrast)),  m = mean of x in the FOV
    gamma      x <- x ** exp(U(-gamma, gamma))
               then clip to [0, 1]; pixels outside the FOV keep their value
               (black stays black)

Every random number comes from the augmenter's own generator, so a seeded
augmenter replays the same sequence.
"""

from __future__ import annotations

import numpy as np

from numpyseg.data.padding import pad_to


def _as_rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def rotation_source(shape: tuple[int, int], degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates (sy, sx), each float64 (H, W), of a rotation about the centre.

    See the module docstring for the formula.
    """
    height, width = shape
    a = np.deg2rad(degrees)
    cos, sin = np.cos(a), np.sin(a)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    qy = np.arange(height, dtype=np.float64)[:, None] - cy
    qx = np.arange(width, dtype=np.float64)[None, :] - cx
    sy = cy + cos * qy + sin * qx
    sx = cx - sin * qy + cos * qx
    return sy, sx


def sample_nearest(array: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """out[q] = array[round(sy[q]), round(sx[q])], 0 where that falls outside; (H, W[, C])."""
    height, width = array.shape[:2]
    iy = np.floor(sy + 0.5).astype(np.int64)
    ix = np.floor(sx + 0.5).astype(np.int64)
    valid = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    flat = np.ascontiguousarray(array).reshape((height * width,) + array.shape[2:])
    out = flat.take(np.clip(iy, 0, height - 1) * width + np.clip(ix, 0, width - 1), axis=0)
    out[~valid] = 0
    return out


def sample_bilinear(array: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Bilinear interpolation at (sy, sx) with zeros outside the array; (H, W[, C]).

    out = (1-fy)(1-fx) a[y0, x0] + (1-fy) fx a[y0, x0+1] + fy (1-fx) a[y0+1, x0] + fy fx a[y0+1, x0+1]
    with y0 = floor(sy), fy = sy - y0 (same for x); neighbours outside are 0.
    Computed as two interpolations along x (top, bottom) and one along y,
    each as a + (b - a) f, in the array's precision (at least float32).
    """
    height, width = array.shape[:2]
    squeeze = array.ndim == 2
    values = array[:, :, None] if squeeze else array
    # Pixel i sits at index i + 1 of the padded array.  Clipping an index to
    # [0, H + 1] sends any point beyond the image onto the zero border, on
    # either side, so it reads 0.
    padded = np.pad(values, [(1, 1), (1, 1), (0, 0)])
    flat = padded.reshape(-1, values.shape[2])
    stride = width + 2
    dtype = np.result_type(array.dtype, np.float32)
    y0 = np.floor(sy)
    x0 = np.floor(sx)
    fy = (sy - y0).astype(dtype)[..., None]
    fx = (sx - x0).astype(dtype)[..., None]
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    row0 = np.clip(y0 + 1, 0, height + 1) * stride
    row1 = np.clip(y0 + 2, 0, height + 1) * stride
    col0 = np.clip(x0 + 1, 0, width + 1)
    col1 = np.clip(x0 + 2, 0, width + 1)
    top = flat.take(row0 + col0, axis=0).astype(dtype, copy=False)
    top += (flat.take(row0 + col1, axis=0) - top) * fx
    bottom = flat.take(row1 + col0, axis=0).astype(dtype, copy=False)
    bottom += (flat.take(row1 + col1, axis=0) - bottom) * fx
    top += (bottom - top) * fy
    return top[:, :, 0] if squeeze else top


def rotate(array: np.ndarray, degrees: float, order: int = 1) -> np.ndarray:
    """Rotate (H, W) or (H, W, C) about its centre; order 1 = bilinear, 0 = nearest."""
    sy, sx = rotation_source(array.shape[:2], degrees)
    return sample_bilinear(array, sy, sx) if order == 1 else sample_nearest(array, sy, sx)


class Augmenter:
    """Random geometric + photometric augmentation (see the module docstring).

    Args:
        flip: random left-right and up-down flips.
        rot90: random multiples of 90 degrees.
        rotate_degrees: maximum small-angle rotation (0 disables it).
        brightness, contrast, gamma: strengths of the photometric changes
            (0 disables each).
        crop: None, or a patch size (int or (h, w)) for patch training.
        crop_in_fov: centre patches on FOV pixels.
        rng: seed, None or np.random.Generator.

    Call: ``image, label, fov = augmenter(image, label, fov)`` with image
    float (H, W, 3), label and fov (H, W) (label may be None).
    """

    def __init__(self, flip: bool = True, rot90: bool = True, rotate_degrees: float = 0.0,
                 brightness: float = 0.1, contrast: float = 0.1, gamma: float = 0.1,
                 crop=None, crop_in_fov: bool = True, rng=None):
        self.flip = bool(flip)
        self.rot90 = bool(rot90)
        self.rotate_degrees = float(rotate_degrees)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = float(gamma)
        self.crop = None if crop is None else ((int(crop), int(crop)) if np.ndim(crop) == 0 else
                                               (int(crop[0]), int(crop[1])))
        self.crop_in_fov = bool(crop_in_fov)
        self.rng = _as_rng(rng)

    def __repr__(self) -> str:
        return (f"Augmenter(flip={self.flip}, rot90={self.rot90}, rotate_degrees={self.rotate_degrees}, "
                f"brightness={self.brightness}, contrast={self.contrast}, gamma={self.gamma}, "
                f"crop={self.crop})")

    def __call__(self, image, label, fov):
        image, label, fov, _ = self.transform(image, label, fov)
        return image, label, fov

    def transform(self, image, label, fov, region=None):
        """Augment and also move `region` (H, W) geometrically (default: all ones).

        `region` marks the pixels that come from the original image: after a
        rotation its corners are 0, after a crop it is the patch's share of the
        image.  Returns (image float32, label uint8 or None, fov uint8, region uint8).
        """
        image = np.asarray(image, dtype=np.float32)
        fov = np.asarray(fov, dtype=np.uint8)
        region = np.ones(image.shape[:2], np.uint8) if region is None else np.asarray(region, np.uint8)
        masks = [fov, region] + ([] if label is None else [np.asarray(label, dtype=np.uint8)])
        rng = self.rng

        if self.flip:
            if rng.random() < 0.5:
                image, masks = image[:, ::-1], [m[:, ::-1] for m in masks]
            if rng.random() < 0.5:
                image, masks = image[::-1], [m[::-1] for m in masks]
        if self.rot90:
            k = int(rng.integers(0, 4))
            if k:
                image, masks = np.rot90(image, k), [np.rot90(m, k) for m in masks]
        if self.rotate_degrees > 0:
            angle = rng.uniform(-self.rotate_degrees, self.rotate_degrees)
            sy, sx = rotation_source(image.shape[:2], angle)
            image = sample_bilinear(np.ascontiguousarray(image), sy, sx)
            masks = [sample_nearest(m, sy, sx) for m in masks]
        if self.crop is not None:
            image, masks = self._crop(image, masks)

        image = self._photometric(np.array(image, dtype=np.float32), masks[0])
        fov, region = (np.ascontiguousarray(m) for m in masks[:2])
        label = None if label is None else np.ascontiguousarray(masks[2])
        return image, label, fov, region

    def _crop(self, image, masks):
        ph, pw = self.crop
        height, width = image.shape[:2]
        if height < ph or width < pw:  # smaller than a patch: pad with zeros first
            size = (max(height, ph), max(width, pw))
            image, masks = pad_to(image, size), [pad_to(m, size) for m in masks]
            height, width = size
        fov = masks[0]
        if self.crop_in_fov and fov.any():
            ys, xs = np.nonzero(fov)
            pick = int(self.rng.integers(0, ys.size))
            top = int(np.clip(ys[pick] - ph // 2, 0, height - ph))
            left = int(np.clip(xs[pick] - pw // 2, 0, width - pw))
        else:
            top = int(self.rng.integers(0, height - ph + 1))
            left = int(self.rng.integers(0, width - pw + 1))
        window = (slice(top, top + ph), slice(left, left + pw))
        return image[window], [m[window] for m in masks]

    def _photometric(self, image: np.ndarray, fov: np.ndarray) -> np.ndarray:
        rng = self.rng
        original = image.copy()
        inside = fov.astype(bool)
        changed = False
        if self.brightness > 0:
            image *= np.float32(1.0 + rng.uniform(-self.brightness, self.brightness))
            changed = True
        if self.contrast > 0:
            mean = image[inside].mean(axis=0) if inside.any() else image.reshape(-1, 3).mean(axis=0)
            factor = np.float32(1.0 + rng.uniform(-self.contrast, self.contrast))
            image = mean.astype(np.float32) + (image - mean.astype(np.float32)) * factor
            changed = True
        if self.gamma > 0:
            np.clip(image, 0.0, 1.0, out=image)
            image **= np.float32(np.exp(rng.uniform(-self.gamma, self.gamma)))
            changed = True
        if changed:
            np.clip(image, 0.0, 1.0, out=image)
            image[~inside] = original[~inside]
        return image.astype(np.float32, copy=False)
