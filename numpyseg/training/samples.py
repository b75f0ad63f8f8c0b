"""The images a training run learns from and validates on.

`load_training_samples` reads the configured dataset's labelled training images;
`split_validation` holds some of them out for validation, chosen by the run's
seed, so every run and every resume with that seed gets the same split.
"""

from __future__ import annotations

import numpy as np

from numpyseg.data.datasets import load_dataset, load_folder
from numpyseg.data.io import DataError
from numpyseg.errors import ConfigError
from numpyseg.training.config import TrainConfig

# A fixed tag mixed into the seed, so the validation split is independent of the
# data stream and of the model's initialisation.
_SPLIT_TAG = 101


def check_labelled(samples, what: str):
    for s in samples:
        if s.label is None:
            raise DataError(f"{what} image {s.name} has no label: training needs a label for every image")
    return samples


def load_training_samples(config: TrainConfig):
    """All labelled training images of the configured dataset (before the split)."""
    name = config.dataset
    if name == "synthetic":
        size = int(config.synthetic_size)
        samples = load_dataset("synthetic", split="training", n=int(config.synthetic_count),
                               size=(size, size), seed=int(config.seed))
    elif name == "drive":
        samples = load_dataset("drive", config.data_root, "training")
    elif name == "stare":
        samples = load_dataset("stare", config.data_root, "training")  # the test images stay unseen
    elif name == "chase":
        samples = load_dataset("chase", config.data_root, "training")
    elif name == "folder":
        if config.images is not None:
            if config.labels is None:
                raise DataError("--dataset folder with --images also needs --labels DIR (training needs labels)")
            samples = load_folder(config.images, config.labels, config.masks)
        else:
            samples = load_dataset("folder", config.data_root, "training")
    else:  # pragma: no cover - TrainConfig.validate rejects it
        raise ValueError(f"unknown dataset {name!r}")
    return check_labelled(samples, name)


def split_validation(samples, config: TrainConfig):
    """(train, val): `val_count` (or round(val_fraction * n), at least 1) images held out.

    The held-out images are chosen by a generator seeded from the run's seed, so
    the split is the same on every run and every resume with that seed.
    """
    n = len(samples)
    if config.val_count is not None:
        k = int(config.val_count)
    else:
        k = int(round(config.val_fraction * n))
        if config.val_fraction > 0 and n >= 2:
            k = max(k, 1)
    if k >= n:
        raise ConfigError(f"the validation split takes {k} of the {n} training images: at least one must "
                         f"be left for training (lower --val-count / --val-fraction)")
    rng = np.random.default_rng([int(config.seed), _SPLIT_TAG])
    held = set(int(i) for i in rng.permutation(n)[:k])
    train = [s for i, s in enumerate(samples) if i not in held]
    val = [s for i, s in enumerate(samples) if i in held]
    return train, val
