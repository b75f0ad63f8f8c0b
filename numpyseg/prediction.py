"""Segment the vessels of a fundus photograph: one call, `segment`.

    >>> from numpyseg.prediction import segment
    >>> result = segment("photo.jpg")                 # the shipped DRIVE weights
    >>> result.probability.shape, result.probability.dtype    # (H, W) float32 in [0, 1]
    >>> result.mask                                   # bool (H, W): probability >= 0.5
    >>> result.overlay                                # uint8 (H, W, 3): vessels tinted green
    >>> result.scale                                  # 0.158: the photo was predicted at 0.158 x its size

The pipeline, for an image of any size:

1. Field of view (FOV).  The bright disc of the retina is found
   (`numpyseg.data.fov.derive_fov`) and its diameter d measured as the larger
   side of its bounding box (some cameras cut the disc at the top and bottom).
2. Scale.  A network sees vessels at the scale it was trained at: DRIVE's
   vessels are 1-12 px wide in a FOV 540 px across; a 4000 x 3000 photograph's
   FOV is ~2800 px across and its large vessels ~60 px wide, which the network
   reads as background (hollow vessels, noise).  The checkpoint records the FOV
   diameter D of its training images (`Checkpoint.fov_diameter`; weights
   without one, such as the shipped DRIVE weights, are taken to be trained at
   DRIVE's `DRIVE_FOV_DIAMETER`).  With rescale='auto' (the default) an image
   whose d differs from D by more than `RESCALE_TOLERANCE` (15 %) is resized by
   D / d before prediction; rescale='always' resizes whenever they differ by
   2 % or more, rescale='off' never.
3. Prediction.  Zero-padded to a multiple of 8, whole or in exact tiles
   (`numpyseg.inference.tiled_logits`), optionally averaged over the 8 flips and
   quarter turns (`tta=True`); the probability map is resized back (bilinear)
   to the input's size, so every output has the input's size.
4. Mask (probability >= threshold) and overlay.
5. With explain=True, the gate maps s of the bottleneck spatial attention and of
   the three cross-scale attentions (`Explanation`).  They are maps of the
   network's input: the image at the trained scale (step 2), zero-padded at the
   bottom and right to a multiple of 8, at 1/8, 1/4, 1/2 and 1/1 of its size.
   They come from one whole-image forward pass, so explain is refused with
   tiling or TTA.  `explanation_figure` draws them; `write_outputs` saves them.

Refused (`DataError`, one line): images smaller than `MIN_SIDE` pixels on a side.
Warned about (`NumpysegWarning`): an image with no field of view (all dark), whose
vessel map is not meaningful.

`predict_samples` is the same pipeline for a scored dataset (numpyseg evaluate),
and `write_outputs` writes one image's maps all or nothing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from numpyseg.data.padding import pad_to_multiple
from numpyseg.errors import ConfigError, DataError, NumpysegWarning

#: DRIVE's FOV diameter in pixels: the median over its 40 shipped FOV masks
#: (training and test) of the larger side of the mask's bounding box (533-541 px).
#: The scale of checkpoints that record none, such as the shipped DRIVE weights.
DRIVE_FOV_DIAMETER = 540.0

#: rescale='auto' resizes when the FOV diameter differs from the trained one by more than this fraction.
RESCALE_TOLERANCE = 0.15

#: rescale='always' leaves images within this fraction alone (not worth an interpolation).
NEGLIGIBLE_SCALE = 0.02

#: The largest enlargement applied: a FOV smaller than 1/4 of the trained one is refused.
MAX_ENLARGEMENT = 4.0

#: The smallest image side accepted, in pixels.  The network pools three times, so
#: a 32-pixel side leaves a 4-pixel bottleneck; below that there is no field of
#: view to find and no context to predict from.
MIN_SIDE = 32

RESCALE_MODES = ("auto", "always", "off")

OVERLAY_COLOUR = np.array([0.0, 1.0, 0.0], dtype=np.float32)   # green
OVERLAY_ALPHA = 0.6
ERROR_COLOURS = {"tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 0, 255), "tn": (0, 0, 0)}

Progress = Callable[[str], None]


# ------------------------------------------------------------------ weights
@dataclass
class TrainedModel:
    """A model with the field-of-view scale it was trained at.

    Attributes:
        model: the network (a numpyseg UNet3).
        fov_diameter: the FOV diameter (pixels) of its training images.
        fov_assumed: True when the checkpoint recorded none and DRIVE's was assumed.
        source: where the weights came from (a path, or '<model>').
        checkpoint: the numpyseg.checkpoint.Checkpoint loaded, or None.
    """

    model: object
    fov_diameter: float = DRIVE_FOV_DIAMETER
    fov_assumed: bool = True
    source: str = "<model>"
    checkpoint: object = None


def resolve_weights(weights=None) -> Path:
    """`weights`, or the shipped weights file when None.

    Raises:
        CheckpointError: no weights given and no shipped weights present.
    """
    from numpyseg.errors import CheckpointError
    from numpyseg.inference import SHIPPED_WEIGHTS

    if weights:
        return Path(weights)
    if SHIPPED_WEIGHTS.is_file():
        return SHIPPED_WEIGHTS
    raise CheckpointError(f"no --weights given and no shipped weights at {SHIPPED_WEIGHTS}: pass --weights "
                          f"FILE.npz (e.g. RUN_DIR/best.npz from numpyseg train)")


def load_trained(weights=None, fov_diameter: float | None = None) -> TrainedModel:
    """The model and its training FOV scale from a checkpoint, a TrainedModel or a model.

    Args:
        weights: None (the shipped weights), a checkpoint path (.npz), a TrainedModel
            (returned as is unless fov_diameter is given) or a model object.
        fov_diameter: overrides the training FOV diameter (pixels).

    Raises:
        CheckpointError: the checkpoint is missing or cannot be loaded.
        ConfigError: fov_diameter is not a positive number.
    """
    if fov_diameter is not None and not (np.isfinite(fov_diameter) and fov_diameter > 0):
        raise ConfigError(f"the FOV diameter must be a positive number of pixels, got {fov_diameter}")
    if isinstance(weights, TrainedModel):
        trained = weights
    elif weights is None or isinstance(weights, (str, os.PathLike)):
        from numpyseg.inference import load_model

        path = resolve_weights(weights)
        model, checkpoint = load_model(path)
        recorded = checkpoint.fov_diameter
        trained = TrainedModel(model, recorded or DRIVE_FOV_DIAMETER, recorded is None, str(path), checkpoint)
    else:
        trained = TrainedModel(weights)
    if fov_diameter is not None:
        trained = TrainedModel(trained.model, float(fov_diameter), False, trained.source, trained.checkpoint)
    return trained


# ----------------------------------------------------------- field of view
def fov_diameter(fov: np.ndarray) -> float | None:
    """Diameter in pixels of a field-of-view mask (H, W): the larger side of its bounding box.

    The larger side, because some cameras cut the disc at the top and bottom.
    Returns None for an empty mask.
    """
    fov = np.asarray(fov).astype(bool)
    rows = np.flatnonzero(fov.any(axis=1))
    cols = np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return None
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def training_fov_diameter(samples) -> float | None:
    """The median FOV diameter (pixels) of training samples (each with a `.fov` mask); None if none has one.

    `numpyseg train` stores it in its checkpoints (`save_checkpoint(fov_diameter=...)`).
    """
    diameters = [d for d in (fov_diameter(s.fov) for s in samples) if d is not None]
    return float(np.median(diameters)) if diameters else None


def scale_factor(measured: float | None, trained: float, rescale: str = "auto") -> float:
    """The factor an image is resized by before prediction (1.0: not resized).

    Args:
        measured: the image's FOV diameter (pixels), None when no FOV was found.
        trained: the FOV diameter the weights were trained at.
        rescale: 'auto' (resize when measured / trained is off by more than
            RESCALE_TOLERANCE), 'always' (when off by NEGLIGIBLE_SCALE or more), 'off'.

    Raises:
        ConfigError: an unknown rescale mode.
        DataError: the FOV is so small that more than MAX_ENLARGEMENT would be needed.
    """
    if rescale not in RESCALE_MODES:
        raise ConfigError(f"rescale must be one of {', '.join(RESCALE_MODES)}, got {rescale!r}")
    if rescale == "off" or measured is None:
        return 1.0
    tolerance = RESCALE_TOLERANCE if rescale == "auto" else NEGLIGIBLE_SCALE
    if abs(measured / trained - 1.0) <= tolerance:
        return 1.0
    scale = trained / measured
    if scale > MAX_ENLARGEMENT:
        raise DataError(f"the field of view is only {measured:.0f} px across (trained at {trained:.0f} px): "
                        f"enlarging it x{scale:.1f} is more than x{MAX_ENLARGEMENT:g}; crop the photograph "
                        f"to its field of view or turn rescaling off")
    return scale


def resize_map(array: np.ndarray, size, resample: str = "bilinear") -> np.ndarray:
    """Resize (H, W) or (H, W, C) float32 to size (h, w) with Pillow, channel by channel.

    Pillow widens the filter when shrinking, so a reduction is antialiased.
    """
    from PIL import Image

    resampling = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 moved the constants
    filters = {"bilinear": resampling.BILINEAR, "bicubic": resampling.BICUBIC}
    height, width = int(size[0]), int(size[1])
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        resized = Image.fromarray(np.ascontiguousarray(array)).resize((width, height), filters[resample])
        return np.asarray(resized, dtype=np.float32)
    return np.stack([resize_map(array[:, :, c], size, resample) for c in range(array.shape[2])], axis=2)


# ------------------------------------------------------------------- inputs
def as_image(image) -> tuple[np.ndarray, str]:
    """A path or an array -> (float32 (H, W, 3) in [0, 1], a name for messages).

    Arrays: (H, W) grayscale or (H, W, 3); float in [0, 1], uint8 (/ 255) or
    uint16 (/ 65535).

    Raises:
        DataError: unreadable file, wrong shape or dtype, values outside [0, 1] or
            not finite, or a side shorter than MIN_SIDE.
    """
    from numpyseg.data.io import read_image

    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        array = read_image(image)
    else:
        name = "image"
        array = _array_to_unit(np.asarray(image))
    if min(array.shape[:2]) < MIN_SIDE:
        raise DataError(f"{name}: {array.shape[0]}x{array.shape[1]} (HxW) is too small to segment: "
                        f"each side needs at least {MIN_SIDE} pixels")
    return array, name


def _array_to_unit(array: np.ndarray) -> np.ndarray:
    """A user's image array -> float32 (H, W, 3) in [0, 1] (see `as_image`)."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"image: expected an array (H, W, 3) or (H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    if array.dtype.kind != "f":
        raise DataError(f"image: expected float values in [0, 1], uint8 or uint16, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or array.min(initial=0.0) < 0.0 or array.max(initial=0.0) > 1.0:
        raise DataError("image: float values must be finite and lie in [0, 1] (divide 8-bit values by 255)")
    return np.ascontiguousarray(array, dtype=np.float32)


# --------------------------------------------------------------- prediction
@dataclass
class Prediction:
    """What `probability_map` assumed and did for one image.

    Attributes:
        scale: the factor the image was resized by before the network (1.0: not).
        fov_diameter: the FOV diameter measured on the image (pixels), None if none found.
        trained_fov_diameter: the FOV diameter the weights were trained at (pixels).
        trained_fov_assumed: True when the weights recorded none and DRIVE's was assumed.
        warnings: the warnings issued (one line each).
    """

    scale: float
    fov_diameter: float | None
    trained_fov_diameter: float
    trained_fov_assumed: bool
    warnings: tuple[str, ...] = ()


def _check_options(tile, threshold: float | None = None) -> None:
    """Raise ConfigError for a tile that is not a multiple of 8 of at least MIN_TILE, or a threshold outside (0, 1)."""
    from numpyseg.inference import check_tile
    from numpyseg.validate import check_threshold

    if tile is not None:
        check_tile(tile, "tile")
    if threshold is not None:
        check_threshold(threshold, "threshold")


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def probability_map(trained: TrainedModel, image: np.ndarray, fov: np.ndarray, *, name: str = "image",
                    rescale: str = "auto", tta: bool = False, tile: int | None = None, pad_size=None,
                    progress: Progress | None = None) -> tuple[np.ndarray, Prediction]:
    """Vessel probabilities (H, W) float32 of one image at its own resolution (steps 2-3 of the module doc).

    Args:
        trained: the model and its training FOV diameter.
        image: float32 (H, W, 3) in [0, 1].
        fov: (H, W) field-of-view mask (derived or the dataset's).
        name: the image's name in messages.
        rescale: 'auto', 'always' or 'off' (see `scale_factor`).
        tta: average over the 8 flips and quarter turns.
        tile: None (whole image) or the tile side (multiple of 8) of exact tiled prediction.
        pad_size: the padded size when the image is not resized (e.g. DRIVE's 592).
        progress: None or a callable taking one-line messages.

    Returns:
        (probabilities (H, W) float32, Prediction).
    """
    from numpyseg.inference import predict_proba

    measured, scale, notes = _plan(trained, fov, name, rescale)
    height, width = image.shape[:2]
    pixels = image
    if scale != 1.0:
        pixels = at_scale(image, scale)
        _say(progress, f"{name}: field of view {measured:.0f} px, trained at {trained.fov_diameter:.0f} px: "
                       f"predicting at x{scale:.3f} ({pixels.shape[1]}x{pixels.shape[0]})")
        pad_size = None
    else:
        _say(progress, f"{name}: predicting at {width}x{height}")
    prob = predict_proba(trained.model, pixels, pad_size=pad_size, tile=tile, tta=tta, progress=progress)
    if scale != 1.0:
        prob = np.clip(resize_map(prob, (height, width), "bilinear"), 0.0, 1.0)
    info = Prediction(scale, measured, trained.fov_diameter, trained.fov_assumed, notes)
    return np.asarray(prob, dtype=np.float32), info


def at_scale(image: np.ndarray, scale: float) -> np.ndarray:
    """The image (H, W, 3) float32 resized by `scale` (bicubic, clipped to [0, 1]), as the network sees it.

    The size is (round(H scale), round(W scale)), at least 8 pixels a side; scale 1.0
    returns the image itself.
    """
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    return np.clip(resize_map(image, size, "bicubic"), 0.0, 1.0)


def _plan(trained: TrainedModel, fov: np.ndarray, name: str, rescale: str):
    """(measured FOV diameter, scale factor, warnings) of one image; warns when no FOV is found."""
    measured = fov_diameter(fov)
    notes = ()
    if measured is None:
        notes = (f"{name}: no field of view found (the image is dark everywhere): its vessel map "
                 f"is not meaningful",)
        warnings.warn(notes[0], NumpysegWarning, stacklevel=4)
    return measured, scale_factor(measured, trained.fov_diameter, rescale), notes


@dataclass
class Explanation:
    """The attention gates of one forward pass (step 5 of the module doc).

    Attributes:
        image: float32 (H', W', 3) in [0, 1], the network's input: the photograph at
            the trained scale (x `scale`), zero-padded at the bottom and right to
            multiples of 8.
        maps: {layer name: float32 (H'/f, W'/f) gate s in (0, 1)}, coarsest first:
            'attention' (the bottleneck's spatial attention, f = 8), then the
            cross-scale attentions 'csa3' (f = 4), 'csa2' (f = 2), 'csa1' (f = 1)
            (SA-UNet has only 'attention').  s = sigmoid(conv7x7(a)), see
            numpyseg.layers.attention.
        scale: the factor the photograph was resized by (1.0: not).
    """

    image: np.ndarray
    maps: dict
    scale: float


@dataclass
class Segmentation:
    """The result of `segment` for one image; every map has the input's size (H, W).

    Attributes:
        probability: float32 (H, W), vessel probability in [0, 1].
        mask: bool (H, W), probability >= threshold.
        fov: bool (H, W), the field of view found on the image.
        overlay: uint8 (H, W, 3), the image with vessel pixels tinted green.
        threshold: the threshold of `mask`.
        scale: the factor the image was resized by before the network (1.0: not).
        fov_diameter: the image's FOV diameter (pixels), None when none was found.
        trained_fov_diameter: the FOV diameter the weights were trained at (pixels).
        trained_fov_assumed: True when the weights recorded none and DRIVE's was assumed.
        tta: whether test-time augmentation was used.
        tile: the tile side used (None: whole image).
        warnings: the warnings issued for this image (one line each).
        explanation: the attention gate maps (an Explanation) with explain=True, else None.
    """

    probability: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    overlay: np.ndarray
    threshold: float
    scale: float
    fov_diameter: float | None
    trained_fov_diameter: float
    trained_fov_assumed: bool
    tta: bool = False
    tile: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    explanation: Explanation | None = None


def segment(image, weights=None, *, threshold: float = 0.5, tile: int | None = None, rescale: str = "auto",
            tta: bool = False, progress: Progress | None = None,
            fov_diameter: float | None = None, explain: bool = False) -> Segmentation:
    """Segment the vessels of one fundus image (see the module docstring for the steps).

    Args:
        image: a file path, or an array (H, W, 3) / (H, W): float in [0, 1], uint8 or uint16.
        weights: None (the shipped DRIVE weights), a checkpoint path, a TrainedModel
            (`load_trained`, to load once for many images) or a model.
        threshold: the probability at and above which a pixel is a vessel.
        tile: None (whole image) or a tile side (multiple of 8) to bound memory; the
            result is the same.
        rescale: 'auto' (default), 'always' or 'off': resizing to the trained FOV scale.
        tta: average the prediction over the 8 flips and quarter turns (8 x the work).
        progress: None or a callable receiving one-line progress messages.
        fov_diameter: overrides the weights' training FOV diameter (pixels).
        explain: also record the attention gate maps (Segmentation.explanation).

    Returns:
        A Segmentation (probability, mask, fov, overlay and what was assumed).

    Raises:
        DataError: unreadable image, bad array, image smaller than MIN_SIDE, FOV too small.
        CheckpointError: the weights cannot be loaded.
        ConfigError: threshold outside (0, 1), tile not a positive multiple of 8,
            unknown rescale mode, explain with tile or tta or with a model that has no
            attention layers.

    Example:
        >>> result = segment("photo.jpg", tta=True)
        >>> result.mask.mean(), result.scale
    """
    from numpyseg.data.fov import derive_fov

    _check_options(tile, threshold)
    if rescale not in RESCALE_MODES:
        raise ConfigError(f"rescale must be one of {', '.join(RESCALE_MODES)}, got {rescale!r}")
    trained = load_trained(weights, fov_diameter)
    if explain:
        check_explainable(trained.model, tile, tta)
    pixels, name = as_image(image)
    _say(progress, f"{name}: {pixels.shape[1]}x{pixels.shape[0]}, finding the field of view")
    fov = derive_fov(pixels).astype(bool)
    explanation = None
    if explain:
        with trained.model.recording_gates():
            prob, info = probability_map(trained, pixels, fov, name=name, rescale=rescale, progress=progress)
            gates = trained.model.gate_maps()
        maps = {layer: np.asarray(s[0], dtype=np.float32) for layer, s in gates.items()}
        explanation = Explanation(pad_to_multiple(at_scale(pixels, info.scale), 8), maps, info.scale)
    else:
        prob, info = probability_map(trained, pixels, fov, name=name, rescale=rescale, tta=tta, tile=tile,
                                     progress=progress)
    mask = prob >= threshold
    return Segmentation(probability=prob, mask=mask, fov=fov, overlay=overlay(pixels, mask),
                        threshold=float(threshold), scale=info.scale, fov_diameter=info.fov_diameter,
                        trained_fov_diameter=info.trained_fov_diameter,
                        trained_fov_assumed=info.trained_fov_assumed, tta=bool(tta), tile=tile,
                        warnings=info.warnings, explanation=explanation)


def check_explainable(model, tile, tta) -> None:
    """Raise ConfigError when the gate maps of one whole-image forward pass cannot be recorded."""
    if tile is not None or tta:
        raise ConfigError("explain shows the attention of one whole-image forward pass: it cannot be combined "
                          "with tiling or test-time augmentation (drop --tile and --tta)")
    if not hasattr(model, "recording_gates"):
        raise ConfigError(f"explain needs a numpyseg U-Net with attention layers, got {type(model).__name__}")


def predict_samples(trained: TrainedModel, samples, *, pad_size=None, rescale: str = "auto", tta: bool = False,
                    tile: int | None = None, batch_size: int = 1, progress: Progress | None = None):
    """Probability maps of dataset samples on their labels' grid (numpyseg evaluate).

    Each sample's own FOV mask gives its FOV diameter; an image predicted at another
    scale has its probabilities resampled back to the image's (= the label's) grid,
    so scores are always taken against the label as published.

    Args:
        trained: the model and its training FOV diameter.
        samples: numpyseg.data.datasets.Sample objects (image, label, fov, name).
        pad_size: the padded size of images not resized (e.g. DRIVE's 592).
        rescale, tta, tile: as `segment`.
        batch_size: images per forward pass, for images predicted whole at their own
            scale without TTA (the others go one by one).
        progress: None or a callable receiving one-line messages (one per image at least).

    Returns:
        (list of float32 (H_i, W_i) probability maps, list of Prediction).
    """
    from numpyseg.inference import predict_proba

    _check_options(tile)
    probs, infos = [None] * len(samples), [None] * len(samples)
    plans = [_plan(trained, s.fov, s.name, rescale) for s in samples]
    batched = [i for i, plan in enumerate(plans) if plan[1] == 1.0 and not tta and tile is None]
    batch_size = max(int(batch_size), 1) if batched else 1
    for first in range(0, len(batched), batch_size):
        chunk = batched[first:first + batch_size]
        _say(progress, f"images {chunk[0] + 1}-{chunk[-1] + 1} of {len(samples)}: "
                       f"{', '.join(samples[i].name for i in chunk)}")
        maps = predict_proba(trained.model, [samples[i].image for i in chunk], pad_size=pad_size,
                             batch_size=batch_size)
        for i, prob in zip(chunk, maps):
            probs[i] = np.asarray(prob, dtype=np.float32)
            infos[i] = Prediction(1.0, plans[i][0], trained.fov_diameter, trained.fov_assumed, plans[i][2])
    for i, sample in enumerate(samples):
        if probs[i] is None:
            _say(progress, f"image {i + 1}/{len(samples)}: {sample.name}")
            with warnings.catch_warnings():   # its no-FOV warning was issued by _plan above
                warnings.simplefilter("ignore", NumpysegWarning)
                probs[i], infos[i] = probability_map(trained, sample.image, sample.fov, name=sample.name,
                                                     rescale=rescale, tta=tta, tile=tile, pad_size=pad_size,
                                                     progress=progress)
    return probs, infos


# ------------------------------------------------------------------ pictures
def overlay(image: np.ndarray, mask: np.ndarray, colour=OVERLAY_COLOUR, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 (H, W, 3): image (H, W, 3) in [0, 1] with mask pixels blended towards `colour`: (1 - a) x + a c."""
    from numpyseg.data.io import to_uint8

    out = np.array(image, dtype=np.float32, copy=True)
    m = np.asarray(mask, dtype=bool)
    out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(colour, dtype=np.float32)
    return to_uint8(out)


def error_map(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): TP white, FP red, FN blue, TN black (see ERROR_COLOURS)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(label) != 0
    out = np.zeros(pred.shape + (3,), dtype=np.uint8)
    out[pred & truth] = ERROR_COLOURS["tp"]
    out[pred & ~truth] = ERROR_COLOURS["fp"]
    out[~pred & truth] = ERROR_COLOURS["fn"]
    return out


# ------------------------------------------------------------------ outputs
#: The files `write_outputs` writes for an image STEM (errors only with a label).
OUTPUT_SUFFIXES = {
    "prob": "_prob.png",      # 8-bit gray, round(255 p): for viewing
    "prob_npy": "_prob.npy",  # float32 (H, W), the exact probabilities: for scoring (np.load)
    "mask": "_mask.png",      # 255 where p >= threshold, else 0
    "overlay": "_overlay.png",
    "errors": "_errors.png",  # with a label: TP white, FP red, FN blue, TN black
    "explain": "_explain.png",      # with explain: the figure of the attention gate maps
    "explain_npz": "_explain.npz",  # with explain: the gate maps, float32, one array per layer
}


def output_paths(out, stem: str, labelled: bool = False, explained: bool = False) -> dict[str, Path]:
    """{kind: path} of the files `write_outputs` writes for image STEM into folder `out`."""
    optional = {"errors": labelled, "explain": explained, "explain_npz": explained}
    kinds = [k for k in OUTPUT_SUFFIXES if optional.get(k, True)]
    return {kind: Path(out) / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def check_outputs_free(paths, overwrite: bool = False) -> None:
    """Raise DataError when an output file exists already and overwrite is False."""
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise DataError(f"{path} exists already: choose another output folder, remove it, or pass "
                            f"--overwrite")


def check_inputs(paths, labels, out, overwrite: bool = False, explain: bool = False) -> None:
    """Read every image (and label) and check every output name before anything is written.

    Args:
        paths: the image files; labels: None or one label file per image, in order.
        out: the output folder; overwrite, explain: as `write_outputs` / `segment`.
    Raises:
        DataError: two images with the same stem (their outputs would collide), an output
            that exists (unless overwrite), an unreadable file, or a label whose size
            differs from its image's.
    """
    from numpyseg.data.io import image_stem, read_label

    stems = {}
    for path in paths:
        stem = image_stem(path)
        if stem in stems:
            raise DataError(f"{stems[stem]} and {path} would write the same outputs {stem}_*: rename one")
        stems[stem] = path
        check_outputs_free(output_paths(out, stem, bool(labels), explain).values(), overwrite)
    for i, path in enumerate(paths):
        image, _ = as_image(path)
        if labels:
            label = read_label(labels[i])
            if label.shape != image.shape[:2]:
                raise DataError(f"label {labels[i]} is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                                f"{path} is {image.shape[0]}x{image.shape[1]}")


def write_outputs(result: Segmentation, out, stem: str, label: np.ndarray | None = None,
                  overwrite: bool = False) -> dict[str, Path]:
    """Write an image's maps (see OUTPUT_SUFFIXES) into folder `out`, all or nothing.

    With an explanation (segment(..., explain=True)) also the figure of its gate
    maps (`explanation_figure`) and the maps themselves (.npz, keys the layer names).
    Every file is first written to a temporary file, then all are renamed
    (`numpyseg.atomic.atomic_write_all`): a full disk leaves no partial set.

    Raises:
        DataError: an output exists and overwrite is False.
    """
    from numpyseg.atomic import atomic_write_all

    explanation = result.explanation
    paths = output_paths(out, stem, label is not None, explanation is not None)
    check_outputs_free(paths.values(), overwrite)
    pictures = {"prob": result.probability, "mask": result.mask, "overlay": result.overlay}
    if label is not None:
        pictures["errors"] = error_map(result.mask, label)
    writers = {paths[kind]: _png_writer(picture) for kind, picture in pictures.items()}
    writers[paths["prob_npy"]] = lambda f: np.save(f, np.asarray(result.probability, dtype=np.float32))
    if explanation is not None:
        figure = explanation_figure(explanation)
        writers[paths["explain"]] = lambda f: figure.savefig(f, format="png")
        writers[paths["explain_npz"]] = lambda f: np.savez(f, **explanation.maps)
    atomic_write_all(writers)
    return paths


def _png_writer(array: np.ndarray):
    """A write(f) callable saving `array` as a PNG (bool -> 0/255, float -> round(255 x), uint8 as is)."""
    from PIL import Image

    from numpyseg.data.io import to_uint8

    image = Image.fromarray(np.ascontiguousarray(to_uint8(array)))
    return lambda f: image.save(f, format="PNG")


#: Titles of the panels of `explanation_figure`, by layer name.
GATE_TITLES = {"attention": "bottleneck spatial attention", "csa3": "cross-scale attention 3",
               "csa2": "cross-scale attention 2", "csa1": "cross-scale attention 1"}


def explanation_figure(explanation: Explanation, columns: int = 2):
    """A matplotlib Figure of the gate maps over the network's input, one panel each with a colour bar.

    Each map is drawn at its own resolution (nearest neighbour, colours 0 to 1)
    over the photograph in gray, both spanning the same extent, so a map's pixel
    covers the f x f photograph pixels it summarises.  Drawn on matplotlib's Agg
    canvas (no pyplot, no display); save with `figure.savefig(path)`.

    Args:
        explanation: from segment(..., explain=True).
        columns: panels per row.
    Returns:
        matplotlib.figure.Figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = explanation.maps
    rows = -(-len(maps) // columns)
    figure = Figure(figsize=(4.6 * columns, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    height, width = explanation.image.shape[:2]
    gray = explanation.image.mean(axis=2)
    extent = (0, width, height, 0)
    scale = "" if explanation.scale == 1.0 else f", photograph x{explanation.scale:.3f}"
    figure.suptitle(f"attention gates s over the network input ({width}x{height}{scale})")
    for i, (name, gate) in enumerate(maps.items()):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(gray, cmap="gray", extent=extent, vmin=0.0, vmax=1.0)
        shown = axes.imshow(gate, cmap="magma", alpha=0.7, extent=extent, vmin=0.0, vmax=1.0,
                            interpolation="nearest")
        axes.set_title(f"{GATE_TITLES.get(name, name)} '{name}' ({gate.shape[1]}x{gate.shape[0]})", fontsize=9)
        axes.set_axis_off()
        figure.colorbar(shown, ax=axes, shrink=0.8, label="gate s")
    return figure


def segmentation_figure(image: np.ndarray, result: Segmentation, name: str = "the image"):
    """A matplotlib Figure of three panels: the photograph, the probability map, the vessels over it.

    Drawn on matplotlib's Agg canvas (no pyplot, no display); write it with `write_figure`.

    Args:
        image: float32 (H, W, 3) in [0, 1], the photograph `result` was segmented from.
        result: segment()'s Segmentation of it.
        name: the photograph's name, for the title.
    Returns:
        matplotlib.figure.Figure, 15 x 5.4 inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 5.4), layout="constrained")
    FigureCanvasAgg(figure)
    panels = [(image, "fundus photograph", None), (result.probability, "vessel probability", "gray"),
              (result.overlay, f"vessels (p >= {result.threshold:g}) over the photograph", None)]
    for axes, (picture, title, cmap) in zip(figure.subplots(1, 3), panels):
        axes.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        axes.set_title(title)
        axes.axis("off")
    figure.suptitle(f"numpyseg SA-UNetv2 on {name}: {result.mask.mean() * 100:.1f}% of pixels are vessels")
    return figure


def write_figure(path, figure, dpi: int = 100) -> Path:
    """Save a matplotlib Figure as a PNG, atomically (numpyseg.atomic); returns the path."""
    import io

    from numpyseg.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())
