"""Reading retinal datasets, synthetic fundus images, padding and augmentation."""

from numpyseg.data.augment import Augmenter
from numpyseg.data.datasets import (Sample, load_chase, load_dataset, load_drive, load_folder,
                                    load_stare)
from numpyseg.data.fov import derive_fov
from numpyseg.data.io import DataError, image_stem, read_image, read_label, read_mask, write_png
from numpyseg.data.sample import Sample
from numpyseg.data.padding import crop_to, default_pad_size, next_multiple, pad_to, pad_to_multiple
from numpyseg.data.synthetic import make_dataset, make_fundus

__all__ = ["DataError", "read_image", "read_label", "read_mask", "write_png", "image_stem",
           "Sample", "load_drive", "load_stare", "load_chase", "load_folder", "load_dataset",
           "derive_fov", "pad_to", "pad_to_multiple", "crop_to", "default_pad_size",
           "next_multiple", "make_fundus", "make_dataset", "Augmenter"]
