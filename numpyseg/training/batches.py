"""Epoch plans and mini-batches for training: whole padded images or random patches.

An epoch is laid out in advance as a *plan*: a list of steps, each a list of
training-image indices.  The plan is drawn from the run's data generator at the
start of the epoch and stored in the checkpoint together with the number of
steps already taken, so a run interrupted in the middle of an epoch resumes at
exactly the next step of the same plan.

    whole images (patch_size 0):  a random permutation of the images cut into
                                  batches; steps_per_epoch 0 -> ceil(n / batch)
    patches (patch_size P):       images drawn from successive permutations;
                                  steps_per_epoch 0 -> ceil(sum_i H_i W_i / (batch P^2)),
                                  i.e. an epoch covers the images' area about once

Each image of a step is augmented (`numpyseg.data.augment.Augmenter`: flips,
rot90, a small rotation, brightness / contrast / gamma, and for patch training
the random crop) and zero-padded at the bottom/right into the batch.  The loss
mask marks the pixels that came from the image (not the zero padding, not the
corners a rotation brings in), and optionally only those inside the FOV.
"""

from __future__ import annotations

import math

import numpy as np

from numpyseg.data.augment import Augmenter
from numpyseg.data.padding import default_pad_size, next_multiple


def plan_epoch(rng: np.random.Generator, n_images: int, batch_size: int, steps: int,
               one_pass: bool = False) -> list[list[int]]:
    """The batches of one epoch as lists of image indices.

    one_pass: one random permutation cut into batches of `batch_size` (the last may
        be smaller): every image exactly once, `steps` is ignored.
    otherwise: `steps` full batches taken from a stream of successive permutations,
        so every image is used about equally often.
    """
    if one_pass:
        order = [int(i) for i in rng.permutation(n_images)]
        return [order[i:i + batch_size] for i in range(0, n_images, batch_size)]
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        stream.extend(int(i) for i in rng.permutation(n_images))
    return [stream[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def default_steps(image_shapes, batch_size: int, patch_size: int) -> int:
    """Steps of one epoch when --steps-per-epoch is 0 (see the module docstring)."""
    if patch_size <= 0:
        return math.ceil(len(image_shapes) / batch_size)
    area = sum(int(h) * int(w) for h, w in image_shapes)
    return max(1, math.ceil(area / (batch_size * patch_size * patch_size)))


def batch_size_hw(config, samples) -> tuple[int, int]:
    """(H, W) of a training batch: the patch, or the dataset's padded size.

    Whole images are padded as the authors did (592 for DRIVE, 704 for STARE,
    else each side up to a multiple of 8); with rot90 augmentation on a
    non-square size both sides take the longer one, since a quarter turn swaps H and W.
    """
    if config.patch_size > 0:
        return config.patch_size, config.patch_size
    height = max(s.shape[0] for s in samples)
    width = max(s.shape[1] for s in samples)
    ph, pw = default_pad_size(config.dataset, (height, width))
    if ph < height or pw < width:  # a DRIVE/STARE-named folder with larger images
        ph, pw = next_multiple(height, 8), next_multiple(width, 8)
    if config.augment and config.rot90 and ph != pw:
        ph = pw = max(ph, pw)
    return ph, pw


def make_augmenter(config, rng: np.random.Generator) -> Augmenter:
    """The Augmenter of a TrainConfig, drawing from the run's data generator `rng`.

    With augmentation off it still crops patches (patch training) but changes nothing else.
    """
    crop = config.patch_size if config.patch_size > 0 else None
    if not config.augment:
        return Augmenter(flip=False, rot90=False, rotate_degrees=0.0, brightness=0.0, contrast=0.0,
                         gamma=0.0, crop=crop, rng=rng)
    return Augmenter(flip=config.flip, rot90=config.rot90, rotate_degrees=config.rotate,
                     brightness=config.brightness, contrast=config.contrast, gamma=config.gamma,
                     crop=crop, rng=rng)


def make_batch(samples, indices, size, augmenter: Augmenter | None, loss_fov: bool = False):
    """Augment the chosen samples and stack them, zero-padded, into one batch.

    Args:
        samples: list of Sample (each with a label).
        indices: which samples, in order.
        size: (H, W) of the batch (a multiple of 8 holding every augmented sample).
        augmenter: the Augmenter (None: the images as they are).
        loss_fov: the loss mask is the FOV inside the image region (else the region).

    Returns:
        images float32 (B, H, W, 3), labels float32 (B, H, W, 1) of 0/1,
        masks float32 (B, H, W, 1) of 0/1.
    """
    height, width = size
    count = len(indices)
    images = np.zeros((count, height, width, 3), np.float32)
    labels = np.zeros((count, height, width, 1), np.float32)
    masks = np.zeros((count, height, width, 1), np.float32)
    for row, index in enumerate(indices):
        s = samples[index]
        if augmenter is not None:
            image, label, fov, region = augmenter.transform(s.image, s.label, s.fov)
        else:
            image, label, fov, region = s.image, s.label, s.fov, np.ones(s.shape, np.uint8)
        h, w = image.shape[:2]
        if h > height or w > width:
            raise ValueError(f"training image {s.name} is {h}x{w} (HxW) after augmentation, larger than "
                             f"the batch size {height}x{width}")
        images[row, :h, :w] = image
        labels[row, :h, :w, 0] = label
        masks[row, :h, :w, 0] = region * fov if loss_fov else region
    return images, labels, masks
