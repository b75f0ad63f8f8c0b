"""`Sample`: one fundus photograph with its vessel label and field of view.

The one record every loader (numpyseg.data.datasets, numpyseg.data.synthetic)
returns and everything downstream (augmentation, training, evaluation) reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Sample:
    """One image with its label and field of view.

    Attributes:
        name: identifier, e.g. '21_training', 'im0001', 'Image_01L'.
        image: float32 (H, W, 3) in [0, 1].
        label: uint8 (H, W) of 0/1, or None for unlabelled images.
        fov: uint8 (H, W) of 0/1.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    fov: np.ndarray

    def __post_init__(self):
        shape = self.image.shape
        if self.image.ndim != 3 or shape[2] != 3:
            raise ValueError(f"Sample {self.name}: image must be (H, W, 3), got shape {shape}")
        if self.label is not None and self.label.shape != shape[:2]:
            raise ValueError(f"Sample {self.name}: label shape {self.label.shape} differs from image {shape[:2]}")
        if self.fov.shape != shape[:2]:
            raise ValueError(f"Sample {self.name}: fov shape {self.fov.shape} differs from image {shape[:2]}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.image.shape[:2]
