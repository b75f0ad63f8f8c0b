"""Dataset loaders: DRIVE, STARE, CHASE_DB1 and a generic folder of images.

Every loader returns a list of `Sample` (sorted by name) holding arrays in the
package's conventions:

    image  float32 (H, W, 3) in [0, 1]
    label  uint8   (H, W) of 0/1 (1 = vessel), or None when there is none
    fov    uint8   (H, W) of 0/1 (1 = inside the field of view)

The datasets are not part of the project: users download them and name the
folder.  Expected layouts:

DRIVE (the original release, any parent folder)::

    <root>/training/images/21_training.tif    <root>/test/images/01_test.tif
    <root>/training/1st_manual/21_manual1.gif <root>/test/1st_manual/01_manual1.gif
    <root>/training/mask/21_training_mask.gif <root>/test/mask/01_test_mask.gif
                                              <root>/test/2nd_manual/01_manual2.gif

STARE (20 labelled images 605 x 700; files found anywhere below <root>, so both
one flat folder and the downloads' ``stare-images/`` + ``labels-ah/`` work)::

    im0001.ppm or im0001.ppm.gz               image
    im0001.ah.ppm or im0001.ah.ppm.gz         label by A. Hoover ('ah'; 'vk' also accepted)

CHASE_DB1 (28 images 960 x 999, files anywhere below <root>)::

    Image_01L.jpg                             image
    Image_01L_1stHO.png                       label by the first observer ('2ndHO' also accepted)

STARE and CHASE_DB1 ship no FOV masks: the FOV is derived from the image
(`numpyseg.data.fov.derive_fov`).

Errors (missing folder, wrong layout, missing or unreadable file, label size
different from the image) raise `DataError` with a one-line message naming the
folder or files involved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpyseg.data.fov import derive_fov
from numpyseg.data.io import DataError, image_stem, is_image_file, read_image, read_label, read_mask


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


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}x{array.shape[1]}"


def make_sample(name: str, image_path, label_path=None, mask_path=None) -> Sample:
    """Read one image (+ label, + FOV mask) from files into a `Sample`.

    Without `mask_path` the FOV is derived from the image.  A label or mask
    whose size differs from the image raises DataError naming both files.
    """
    image = read_image(image_path)
    label = None
    if label_path is not None:
        label = read_label(label_path)
        if label.shape != image.shape[:2]:
            raise DataError(f"label {label_path} is {_hw(label)} (HxW) but its image {image_path} "
                            f"is {_hw(image)}")
    if mask_path is not None:
        fov = read_mask(mask_path)
        if fov.shape != image.shape[:2]:
            raise DataError(f"mask {mask_path} is {_hw(fov)} (HxW) but its image {image_path} "
                            f"is {_hw(image)}")
    else:
        fov = derive_fov(image)
    return Sample(name=name, image=image, label=label, fov=fov)


def _natural_key(text: str):
    """Sort key that orders embedded numbers numerically ('im2' < 'im10')."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _folder(root, what: str) -> Path:
    if root is None:
        raise DataError(f"{what}: no folder given")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{what} folder {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{what} folder {path} is not a folder")
    return path


def _archive_hint(root: Path) -> str:
    """A hint for the common mistake of pointing at unextracted downloads."""
    archives = [p.name for p in root.rglob("*") if p.name.lower().endswith((".tar", ".zip", ".tar.gz", ".tgz"))]
    return f" (found archive {archives[0]}: extract it first)" if archives else ""


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in pattern if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


# --------------------------------------------------------------------------- DRIVE

DRIVE_SPLITS = {"training": "training", "train": "training", "test": "test", "testing": "test"}


def _drive_root(root) -> Path:
    path = _folder(root, "DRIVE")
    if not (path / "training").is_dir() and not (path / "test").is_dir():
        for child in ("DRIVE", "drive"):  # the user named the folder holding DRIVE/
            if (path / child / "training").is_dir() or (path / child / "test").is_dir():
                return path / child
    return path


def _find_by_prefix(folder: Path, prefix: str) -> Path | None:
    """The single image file in `folder` whose stem starts with `prefix` (None if none)."""
    matches = [p for p in _image_files(folder) if image_stem(p).startswith(prefix)]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DataError(f"folder {folder} has several files for {prefix!r}: {names}")
    return matches[0] if matches else None


def load_drive(root, split: str = "training", observer: int = 1) -> list[Sample]:
    """Load DRIVE's training (20 images) or test (20 images) split.

    Args:
        root: the DRIVE folder (holding training/ and test/), or a folder
            holding DRIVE/.
        split: 'training' or 'test' ('train' / 'testing' accepted).
        observer: 1 for 1st_manual (the reference), 2 for 2nd_manual (test
            split only: the second human observer).

    Image '21_training.tif' is paired with '21_manual1.gif' and
    '21_training_mask.gif' by its leading number.  The training split needs
    its labels; a test split without a ``<observer>_manual`` folder loads
    with label None.
    """
    if split not in DRIVE_SPLITS:
        raise DataError(f"DRIVE split must be 'training' or 'test', got {split!r}")
    split = DRIVE_SPLITS[split]
    root = _drive_root(root)
    base = root / split
    images_dir = base / "images"
    manual = {1: "1st_manual", 2: "2nd_manual"}.get(int(observer))
    if manual is None:
        raise DataError(f"DRIVE observer must be 1 or 2, got {observer!r}")
    layout = f"expected the standard DRIVE layout {split}/images, {split}/1st_manual, {split}/mask"
    if not images_dir.is_dir():
        raise DataError(f"DRIVE folder {root} has no {split}/images: {layout}{_archive_hint(root)}")
    images = _image_files(images_dir)
    if not images:
        raise DataError(f"DRIVE folder {images_dir} holds no image files: {layout}")
    labels_dir = base / manual
    masks_dir = base / "mask"
    if not labels_dir.is_dir() and (split == "training" or observer != 1):
        raise DataError(f"DRIVE folder {root} has no {split}/{manual}: {layout}")
    if not masks_dir.is_dir():
        raise DataError(f"DRIVE folder {root} has no {split}/mask: {layout}")

    samples = []
    for image_path in images:
        name = image_stem(image_path)
        number = name.split("_")[0]
        label_path = None
        if labels_dir.is_dir():
            label_path = _find_by_prefix(labels_dir, f"{number}_manual")
            if label_path is None:
                raise DataError(f"DRIVE image {image_path} has no label {number}_manual{observer}.gif "
                                f"in {labels_dir}")
        mask_path = _find_by_prefix(masks_dir, f"{number}_{split}_mask") or _find_by_prefix(
            masks_dir, f"{number}_")
        if mask_path is None:
            raise DataError(f"DRIVE image {image_path} has no mask {number}_{split}_mask.gif in {masks_dir}")
        samples.append(make_sample(name, image_path, label_path, mask_path))
    return samples


# --------------------------------------------------------------------------- STARE

_SUFFIX = r"\.(?:ppm|pgm|pnm|png|tif|tiff|jpg|jpeg|gif|bmp)(?:\.gz)?"
_STARE_IMAGE = re.compile(rf"^(im\d{{4}}){_SUFFIX}$", re.IGNORECASE)
_STARE_LABEL = re.compile(rf"^(im\d{{4}})\.(ah|vk){_SUFFIX}$", re.IGNORECASE)


def _prefer_plain(paths: list[Path]) -> Path:
    """Of several files for one image, the uncompressed one first, then by path."""
    return sorted(paths, key=lambda p: (p.name.lower().endswith(".gz"), str(p)))[0]


#: STARE has no official test split.  numpyseg holds out every STARE_TEST_EVERY-th
#: image in name order (the 4th, 8th, ..., 20th: of the 20 labelled images im0004,
#: im0081, im0163, im0240 and im0324) as its test split: 15 training / 5 test, a fixed
#: leave-some-out split that keeps images from the whole collection on both sides.
STARE_TEST_EVERY = 4


def stare_split(samples: list[Sample], split: str) -> list[Sample]:
    """The 'training', 'test' or 'all' part of the STARE images (see STARE_TEST_EVERY).

    Args:
        samples: STARE samples (as load_stare returns them; sorted here by name).
        split: 'training' (every image but the held-out ones), 'test' (every
            STARE_TEST_EVERY-th image in name order) or 'all'.
    """
    ordered = sorted(samples, key=lambda s: s.name)
    if split == "all":
        return ordered
    held_out = {i for i in range(len(ordered)) if i % STARE_TEST_EVERY == STARE_TEST_EVERY - 1}
    if split == "test":
        return [s for i, s in enumerate(ordered) if i in held_out]
    if split == "training":
        return [s for i, s in enumerate(ordered) if i not in held_out]
    raise DataError(f"STARE split must be 'training', 'test' or 'all', got {split!r}")


def load_stare(root, observer: str = "ah", labelled_only: bool = True) -> list[Sample]:
    """Load STARE: images im0001.ppm(.gz) with labels im0001.ah.ppm(.gz).

    Files are searched for by name anywhere below `root` (one flat folder, or
    the downloads' ``stare-images/`` and ``labels-ah/`` subfolders).  The FOV
    is derived from each image.  STARE has no official training/test split:
    `stare_split` gives numpyseg's fixed one.

    Args:
        root: a folder holding the files (at any depth).
        observer: 'ah' (A. Hoover, the usual reference) or 'vk' (V. Kouznetsova).
        labelled_only: keep only the images that have a label (the 20 of the
            vessel-segmentation subset); False keeps every image, label None
            where it has none.
    """
    root = _folder(root, "STARE")
    observer = observer.lower()
    if observer not in ("ah", "vk"):
        raise DataError(f"STARE observer must be 'ah' or 'vk', got {observer!r}")
    images: dict[str, list[Path]] = {}
    labels: dict[str, list[Path]] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        match = _STARE_LABEL.match(path.name)
        if match:
            if match.group(2).lower() == observer:
                labels.setdefault(match.group(1).lower(), []).append(path)
            continue
        match = _STARE_IMAGE.match(path.name)
        if match:
            images.setdefault(match.group(1).lower(), []).append(path)
    layout = "expected files im0001.ppm (or .ppm.gz) and labels im0001.ah.ppm (or .ah.ppm.gz)"
    if not images:
        raise DataError(f"STARE folder {root} has no images named like im0001.ppm: {layout}{_archive_hint(root)}")
    if labelled_only and not labels:
        raise DataError(f"STARE folder {root} has no labels named like im0001.{observer}.ppm: "
                        f"{layout}{_archive_hint(root)}")
    samples = []
    for name in sorted(images, key=_natural_key):
        label_path = _prefer_plain(labels[name]) if name in labels else None
        if label_path is None and labelled_only:
            continue
        samples.append(make_sample(name, _prefer_plain(images[name]), label_path, None))
    missing = sorted(set(labels) - set(images))
    if missing:
        raise DataError(f"STARE folder {root} has a label {_prefer_plain(labels[missing[0]])} "
                        f"but no image {missing[0]}.ppm")
    return samples


# --------------------------------------------------------------------------- CHASE_DB1

_CHASE_IMAGE = re.compile(r"^(image_(\d{2})[lr])\.(?:jpg|jpeg|png|tif|tiff|bmp)$", re.IGNORECASE)
_CHASE_LABEL = re.compile(r"^(image_\d{2}[lr])_(1stho|2ndho)\.(?:png|gif|tif|tiff|bmp|ppm)$", re.IGNORECASE)
CHASE_SPLITS = ("all", "training", "test")


def load_chase(root, split: str = "all", observer: int = 1) -> list[Sample]:
    """Load CHASE_DB1: images Image_01L.jpg with labels Image_01L_1stHO.png.

    Files are searched for by name anywhere below `root`; the FOV is derived
    from each image.  CHASE_DB1 has no official split; 'training' is the first
    20 images (children 01-10) and 'test' the last 8 (children 11-14), the
    split used by SA-UNet and most later papers; 'all' gives all 28.

    Args:
        root: a folder holding the files (at any depth).
        split: 'all', 'training' or 'test'.
        observer: 1 (``_1stHO``, the usual reference) or 2 (``_2ndHO``).
    """
    split = DRIVE_SPLITS.get(split, split)
    if split not in CHASE_SPLITS:
        raise DataError(f"CHASE_DB1 split must be 'all', 'training' or 'test', got {split!r}")
    tag = {1: "1stho", 2: "2ndho"}.get(int(observer))
    if tag is None:
        raise DataError(f"CHASE_DB1 observer must be 1 or 2, got {observer!r}")
    root = _folder(root, "CHASE_DB1")
    images: dict[str, Path] = {}
    numbers: dict[str, int] = {}
    labels: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        match = _CHASE_LABEL.match(path.name)
        if match:
            if match.group(2).lower() == tag:
                labels.setdefault(match.group(1).lower(), path)
            continue
        match = _CHASE_IMAGE.match(path.name)
        if match:
            images.setdefault(match.group(1).lower(), path)
            numbers[match.group(1).lower()] = int(match.group(2))
    layout = "expected files Image_01L.jpg and labels Image_01L_1stHO.png"
    if not images:
        raise DataError(f"CHASE_DB1 folder {root} has no images named like Image_01L.jpg: "
                        f"{layout}{_archive_hint(root)}")
    samples = []
    for key in sorted(images, key=_natural_key):
        if split == "training" and numbers[key] > 10 or split == "test" and numbers[key] <= 10:
            continue
        if key not in labels:
            raise DataError(f"CHASE_DB1 image {images[key]} has no label {images[key].stem}_"
                            f"{'1stHO' if tag == '1stho' else '2ndHO'}.png below {root}")
        samples.append(make_sample(images[key].stem, images[key], labels[key], None))
    return samples


# --------------------------------------------------------------------------- generic folder

_SEPARATORS = "_-. "


def _leading_token(stem: str) -> str:
    return re.split(r"[_\-. ]", stem, maxsplit=1)[0]


def match_files(image_paths: list[Path], candidates: list[Path], what: str, folder: Path) -> dict:
    """Pair each image with one file of `candidates` by name (see `load_folder` for the rule).

    Returns {image_path: candidate_path}; raises DataError for an image with no
    match or with several equally good ones.
    """
    by_stem: dict[str, list[Path]] = {}
    for path in candidates:
        by_stem.setdefault(image_stem(path), []).append(path)
    stems = [image_stem(p) for p in image_paths]
    tokens = [_leading_token(s) for s in stems]
    pairs = {}
    for image_path, stem, token in zip(image_paths, stems, tokens):
        found = by_stem.get(stem, [])
        if not found:
            found = [p for s, ps in by_stem.items() for p in ps
                     if len(s) > len(stem) and s.startswith(stem) and s[len(stem)] in _SEPARATORS]
        if not found and tokens.count(token) == 1:
            found = [p for s, ps in by_stem.items() for p in ps if _leading_token(s) == token]
        if not found:
            raise DataError(f"image {image_path} has no {what} in {folder} (a {what} matches when its "
                            f"name without extension equals {stem!r} or starts with {stem + '_'!r})")
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise DataError(f"image {image_path} matches several {what}s in {folder}: {names}")
        pairs[image_path] = found[0]
    return pairs


def load_folder(images_dir, labels_dir=None, masks_dir=None) -> list[Sample]:
    """Load every image of a folder, with labels and FOV masks from other folders.

    Matching rule, for an image with file stem S (name without extension and
    without ``.gz``), a label/mask file with stem T matches when, in order of
    preference:
      1. T == S                               ('01.png' <-> '01.gif');
      2. T starts with S followed by one of ``_ - . space``
                                              ('Image_01L.jpg' <-> 'Image_01L_1stHO.png');
      3. T and S have the same leading token (text before the first separator)
         and no other image shares that token
                                              ('21_training.tif' <-> '21_manual1.gif').
    An image with no match, or with several matches at the first rule that
    finds any, raises DataError.  Without `masks_dir` the FOV is derived from
    the image; without `labels_dir` the labels are None.
    """
    images_dir = _folder(images_dir, "images")
    images = _image_files(images_dir)
    if not images:
        raise DataError(f"images folder {images_dir} holds no image files")
    label_pairs = mask_pairs = {}
    for other, what in ((labels_dir, "labels"), (masks_dir, "masks")):
        if other is not None and Path(other).expanduser().resolve() == images_dir.resolve():
            raise DataError(f"{what} folder {other} is the images folder: keep images, labels and masks "
                            f"in separate folders (or use load_chase / load_stare)")
    if labels_dir is not None:
        labels_dir = _folder(labels_dir, "labels")
        label_pairs = match_files(images, _image_files(labels_dir), "label", labels_dir)
    if masks_dir is not None:
        masks_dir = _folder(masks_dir, "masks")
        mask_pairs = match_files(images, _image_files(masks_dir), "mask", masks_dir)
    return [make_sample(image_stem(p), p, label_pairs.get(p), mask_pairs.get(p)) for p in images]


def _load_folder_layout(root, split: str) -> list[Sample]:
    """load_dataset('folder', root): root[/split]/images, optional labels/ and masks/."""
    root = _folder(root, "dataset")
    base = root / split if split not in (None, "all") and (root / split / "images").is_dir() else root
    if not (base / "images").is_dir():
        raise DataError(f"dataset folder {root} has no images/ (or {split}/images/): expected "
                        f"images/ with optional labels/ and masks/ beside it")
    labels = base / "labels" if (base / "labels").is_dir() else None
    masks = base / "masks" if (base / "masks").is_dir() else None
    return load_folder(base / "images", labels, masks)


DATASETS = ("drive", "stare", "chase", "folder", "synthetic")


def load_dataset(name: str, root=None, split: str = "training", **options) -> list[Sample]:
    """Load a dataset by name.

    Args:
        name: 'drive', 'stare', 'chase' (or 'chase_db1'), 'folder' or 'synthetic'.
        root: the dataset's folder (ignored for 'synthetic').
        split: 'training', 'test' or 'all' for DRIVE, STARE (the held-out split
            of `stare_split`) and CHASE_DB1; for 'folder',
            ``root/<split>/images`` is used when it exists, else
            ``root/images``; for 'synthetic', 'training' and 'test' are two
            different seeds.
        **options: passed to the loader (observer=..., labelled_only=...;
            for 'synthetic': n=20, size=(128, 128), seed=0).

    Raises:
        DataError: unknown name, missing folder, wrong layout, bad files.
    """
    key = str(name).lower().replace("-", "_")
    if key == "drive":
        if split in (None, "all"):
            return load_drive(root, "training", **options) + load_drive(root, "test", **options)
        return load_drive(root, split, **options)
    if key == "stare":
        return stare_split(load_stare(root, **options), "all" if split is None else split)
    if key in ("chase", "chase_db1", "chasedb1"):
        return load_chase(root, "all" if split is None else split, **options)
    if key == "folder":
        return _load_folder_layout(root, split)
    if key == "synthetic":
        from numpyseg.data.synthetic import make_dataset

        n = options.pop("n", 20)
        size = options.pop("size", (128, 128))
        seed = options.pop("seed", 0) + (1_000_003 if split == "test" else 0)
        return make_dataset(n, size=size, seed=seed, **options)
    raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
