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
(`numpyseg.data.fov.derive_fov`), unless a file named like the image is found
whose content is a binary mask (a CHASE_DB1 copy with ``FOV/Image_01L.png``):
then it is used as the FOV.

Roles by name and content.  Where names leave a file's role open (several
files named like one image, whatever folders they sit in), the content
decides: a photograph has many grey levels, a label or mask is black and
white (`numpyseg.data.io.is_photograph`).  Every loaded image must look like a
photograph and every label and mask must not; anything else is refused.

Splits by name.  Every split is a fixed list of image names (DRIVE_SPLIT_NAMES,
STARE_TEST / STARE_TRAINING, CHASE_SPLIT_NAMES), never a position among the
files present; a `DataWarning` names the split's images that are missing.

Errors (missing folder, wrong layout, missing or unreadable file, label size
different from the image) raise `DataError` with a one-line message naming the
folder or files involved.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from numpyseg.data.fov import derive_fov
from numpyseg.data.io import (DataError, binarise, grey_fraction, image_stem, is_image_file, is_photograph,
                              read_image, read_levels, warn_data)
from numpyseg.data.sample import Sample


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}x{array.shape[1]}"


def _read_binary_file(path, what: str, image_path, image: np.ndarray) -> np.ndarray:
    """Read a label or mask for `image` as uint8 (H, W) of 0/1, checking its content and size.

    Raises:
        DataError: the file looks like a photograph, or its size differs from the image's.
    """
    levels = read_levels(path)
    if is_photograph(levels):
        raise DataError(f"{what} {path} looks like a photograph ({100 * grey_fraction(levels):.0f} % of its "
                        f"pixels are grey), not a {what}: check which file belongs to {image_path}")
    binary = binarise(levels.max(axis=2), path, what)
    if binary.shape != image.shape[:2]:
        raise DataError(f"{what} {path} is {_hw(binary)} (HxW) but its image {image_path} is {_hw(image)}")
    return binary


def check_photograph(image: np.ndarray, path) -> None:
    """Refuse an 'image' whose content is a mask or label (black and white), naming the file.

    Raises:
        DataError: `is_photograph(image)` is False.
    """
    if not is_photograph(image):
        raise DataError(f"image {path} looks like a mask or label ({100 * (1 - grey_fraction(image)):.0f} % "
                        f"of its pixels are black, white or a pure colour), not a fundus photograph: "
                        f"check the file")


def make_sample(name: str, image_path, label_path=None, mask_path=None) -> Sample:
    """Read one image (+ label, + FOV mask) from files into a `Sample`.

    The image must look like a photograph, the label and mask like binary
    images (see the module docstring).  Without `mask_path` the FOV is derived
    from the image.

    Raises:
        DataError: a file is unreadable, has the wrong kind of content, or a
            label or mask's size differs from the image (naming both files).
    """
    image = read_image(image_path)
    check_photograph(image, image_path)
    label = None if label_path is None else _read_binary_file(label_path, "label", image_path, image)
    if mask_path is None:
        fov = derive_fov(image)
    else:
        fov = _read_binary_file(mask_path, "mask", image_path, image)
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


#: At most this many missing image names are listed in a warning.
MISSING_SHOWN = 8


def warn_missing(dataset: str, split: str, expected, found) -> None:
    """Warn (DataWarning) which of a split's images are absent from the images found.

    Args:
        dataset: 'DRIVE', 'STARE', 'CHASE_DB1', for the message.
        split: the split's name, for the message.
        expected: the split's image names (its fixed list).
        found: the names of the images found (compared case-insensitively).
    """
    present = {name.lower() for name in found}
    missing = [name for name in expected if name.lower() not in present]
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (f" and {len(missing) - MISSING_SHOWN} more"
                                                      if len(missing) > MISSING_SHOWN else "")
        warn_data(f"{dataset} {split} split: {len(missing)} of its {len(expected)} images are missing "
                  f"({shown}): its scores are not comparable with the full split's")


def _same_file_compressed(paths: list[Path]) -> list[Path]:
    """Drop ``x.ppm.gz`` when ``x.ppm`` is also present (the same file, compressed)."""
    plain = {p.name.lower() for p in paths if not p.name.lower().endswith(".gz")}
    return [p for p in paths if not (p.name.lower().endswith(".gz") and p.name.lower()[:-3] in plain)]


def photograph_and_mask(name: str, paths: list[Path], dataset: str) -> tuple[Path, Path | None]:
    """Of the files named like image `name`, the photograph and (if any) the FOV mask, by content.

    One file is the photograph.  With several (``Images/Image_01L.jpg`` and
    ``FOV/Image_01L.png``), each is read: exactly one must look like a
    photograph (`is_photograph`) and at most one other like a binary mask.

    Raises:
        DataError: the files cannot be told apart (several photographs or
            several masks, or no photograph), naming them.
    """
    paths = sorted(_same_file_compressed(paths), key=str)
    if len(paths) == 1:
        return paths[0], None
    photographs = [p for p in paths if is_photograph(read_image(p))]
    masks = [p for p in paths if p not in photographs]
    if len(photographs) != 1 or len(masks) > 1:
        names = ", ".join(str(p) for p in paths)
        raise DataError(f"{dataset} files {names} are all named like image {name}; by content "
                        f"{len(photographs)} look like photographs and {len(masks)} like masks: keep one "
                        f"photograph (and at most one FOV mask) per image name")
    return photographs[0], (masks[0] if masks else None)


# --------------------------------------------------------------------------- pairing by name

#: Words that may end an image's name to say which split it belongs to ('21_training', '01_test').
IMAGE_ROLE_WORDS = ("training", "test")
#: Words that may end a label's or mask's name to say what it is ('21_manual1', 'Image_01L_1stHO',
#: 'im0001.ah', '21_training_mask').
LABEL_SUFFIXES = ("manual1", "manual2", "1stHO", "2ndHO", "ah", "vk", "mask", "fov", "label", "gt",
                  "vessels")
#: Characters that may separate a name from its role word or suffix.
SEPARATORS = "_-. "


def _strip_word(stem: str, words) -> str | None:
    """`stem` (lower case) without a trailing separator + one of `words`, or None when it has none."""
    stem = stem.lower()
    for word in words:
        word = word.lower()
        cut = len(stem) - len(word) - 1
        if cut > 0 and stem.endswith(word) and stem[cut] in SEPARATORS:
            return stem[:cut]
    return None


def names_match(image: str, other: str) -> bool:
    """True when a label or mask named `other` belongs to the image named `image` (stems, case ignored).

    The rule: `other` equals `image`; or `other` minus a known suffix
    (LABEL_SUFFIXES, after a separator) equals `image`; or it equals `image`
    minus a known role word (IMAGE_ROLE_WORDS).  So '21_training' pairs with
    '21_manual1' and '21_training_mask', 'Image_01L' with 'Image_01L_1stHO',
    'im0001' with 'im0001.ah', '01_test' with '01_test'; 'p7_OD' does not pair
    with 'p7_OS', nor '12' with '120'.
    """
    image, other = image.lower(), other.lower()
    base = _strip_word(other, LABEL_SUFFIXES)
    if other == image or base == image:
        return True
    return base is not None and base == _strip_word(image, IMAGE_ROLE_WORDS)


def _nearest(stem: str, candidates: list[Path]) -> str:
    """', nearest name X does not match' for the candidate sharing the longest start with `stem`, or ''."""
    if not candidates:
        return ""
    common = [len(os.path.commonprefix([stem.lower(), image_stem(p).lower()])) for p in candidates]
    best = int(np.argmax(common))
    return f" (nearest name {candidates[best].name} does not match)" if common[best] else ""


def match_files(image_paths: list[Path], candidates: list[Path], what: str, folder: Path) -> dict:
    """Pair each image with exactly one file of `candidates` by `names_match`, one to one.

    Returns:
        {image_path: candidate_path}.

    Raises:
        DataError: an image with no match or several, or a file matching
            several images (naming the files).
    """
    pairs, owner = {}, {}
    for image_path in image_paths:
        stem = image_stem(image_path)
        found = [p for p in candidates if names_match(stem, image_stem(p))]
        if not found:
            raise DataError(f"image {image_path} has no {what} in {folder}{_nearest(stem, candidates)} (a "
                            f"{what} is named {stem}, or {stem}_<suffix> with a suffix such as manual1, "
                            f"1stHO, ah or mask)")
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise DataError(f"image {image_path} matches several {what}s in {folder}: {names}")
        if found[0] in owner:
            raise DataError(f"{what} {found[0]} matches several images: {owner[found[0]].name} and "
                            f"{image_path.name}")
        owner[found[0]] = image_path
        pairs[image_path] = found[0]
    return pairs


# --------------------------------------------------------------------------- DRIVE

DRIVE_SPLITS = {"training": "training", "train": "training", "test": "test", "testing": "test"}


def _drive_root(root) -> Path:
    path = _folder(root, "DRIVE")
    if not (path / "training").is_dir() and not (path / "test").is_dir():
        for child in ("DRIVE", "drive"):  # the user named the folder holding DRIVE/
            if (path / child / "training").is_dir() or (path / child / "test").is_dir():
                return path / child
    return path


#: DRIVE's official splits, by image name (the folders training/ and test/ of the release).
DRIVE_SPLIT_NAMES = {
    "training": tuple(f"{number}_training" for number in range(21, 41)),
    "test": tuple(f"{number:02d}_test" for number in range(1, 21)),
}


def _check_drive_names(images: list[Path], split: str) -> None:
    """Refuse an image in DRIVE's `split` folder that is not one of the split's images; warn about missing ones."""
    names = [image_stem(p) for p in images]
    own = {n.lower() for n in DRIVE_SPLIT_NAMES[split]}
    for path, name in zip(images, names):
        if name.lower() not in own:
            other = "test" if split == "training" else "training"
            where = (f"an image of DRIVE's {other} split" if name.lower() in
                     {n.lower() for n in DRIVE_SPLIT_NAMES[other]} else "not a DRIVE image name")
            first, last = DRIVE_SPLIT_NAMES[split][0], DRIVE_SPLIT_NAMES[split][-1]
            raise DataError(f"DRIVE {split} folder holds {path}, {where} ({split} images are {first} .. "
                            f"{last}): remove it, or use --dataset folder for other images")
    warn_missing("DRIVE", split, DRIVE_SPLIT_NAMES[split], names)


def load_drive(root, split: str = "training", observer: int = 1) -> list[Sample]:
    """Load DRIVE's training (20 images) or test (20 images) split.

    Args:
        root: the DRIVE folder (holding training/ and test/), or a folder
            holding DRIVE/.
        split: 'training' or 'test' ('train' / 'testing' accepted).
        observer: 1 for 1st_manual (the reference), 2 for 2nd_manual (test
            split only: the second human observer).

    The split's images are DRIVE_SPLIT_NAMES[split] ('21_training' ..
    '40_training', '01_test' .. '20_test'): an image of another name in the
    split's folder is refused, missing ones are warned about.  Labels and
    masks are paired by `names_match` ('21_training.tif' with
    '21_manual1.gif' and '21_training_mask.gif').  The training split needs
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
    _check_drive_names(images, split)
    labels = match_files(images, _image_files(labels_dir), "label", labels_dir) if labels_dir.is_dir() else {}
    masks = match_files(images, _image_files(masks_dir), "mask", masks_dir)
    return [make_sample(image_stem(p), p, labels.get(p), masks[p]) for p in images]


# --------------------------------------------------------------------------- STARE

_SUFFIX = r"\.(?:ppm|pgm|pnm|png|tif|tiff|jpg|jpeg|gif|bmp)(?:\.gz)?"
_STARE_IMAGE = re.compile(rf"^(im\d{{4}}){_SUFFIX}$", re.IGNORECASE)
_STARE_LABEL = re.compile(rf"^(im\d{{4}})\.(ah|vk){_SUFFIX}$", re.IGNORECASE)


def _one_file(paths: list[Path], what: str) -> Path:
    """The one file of `paths` (``x.ppm`` preferred to its copy ``x.ppm.gz``); several raise DataError."""
    paths = sorted(_same_file_compressed(paths), key=str)
    if len(paths) > 1:
        raise DataError(f"several {what} files for one image: {', '.join(str(p) for p in paths)}: keep one")
    return paths[0]


#: The 20 STARE images with vessel labels (Hoover, Kouznetsova and Goldbaum, IEEE TMI 19(3), 2000).
STARE_LABELLED = ("im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082",
                  "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240", "im0255", "im0291",
                  "im0319", "im0324")
#: STARE has no official test split.  numpyseg holds out every fourth of the 20 labelled images in
#: name order, a fixed list of names whatever files are present: 15 training / 5 test, with images
#: from the whole collection on both sides.
STARE_TEST = STARE_LABELLED[3::4]  # im0004, im0081, im0163, im0240, im0324
STARE_TRAINING = tuple(name for name in STARE_LABELLED if name not in STARE_TEST)


def stare_split(samples: list[Sample], split: str) -> list[Sample]:
    """The 'training', 'test' or 'all' part of the STARE images, by name (STARE_TRAINING, STARE_TEST).

    Args:
        samples: STARE samples (as load_stare returns them; sorted here by name).
        split: 'training' (the images named in STARE_TRAINING), 'test' (those
            in STARE_TEST) or 'all' (every sample given).

    Warns:
        DataWarning: naming the split's images that are not among `samples`.
    """
    ordered = sorted(samples, key=lambda s: s.name)
    if split == "all":
        return ordered
    names = {"training": STARE_TRAINING, "test": STARE_TEST}.get(split)
    if names is None:
        raise DataError(f"STARE split must be 'training', 'test' or 'all', got {split!r}")
    warn_missing("STARE", split, names, [s.name for s in ordered])
    return [s for s in ordered if s.name.lower() in names]


def load_stare(root, observer: str = "ah", labelled_only: bool = True) -> list[Sample]:
    """Load STARE: images im0001.ppm(.gz) with labels im0001.ah.ppm(.gz).

    Files are searched for by name anywhere below `root` (one flat folder, or
    the downloads' ``stare-images/`` and ``labels-ah/`` subfolders).  The FOV
    is derived from each image (or read from a binary file named like it,
    see `photograph_and_mask`).  STARE has no official training/test split:
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
    missing = sorted(set(labels) - set(images))
    if missing:
        raise DataError(f"STARE folder {root} has a label {_one_file(labels[missing[0]], 'STARE label')} "
                        f"but no image {missing[0]}.ppm")
    samples = []
    for name in sorted(images, key=_natural_key):
        label_path = _one_file(labels[name], "STARE label") if name in labels else None
        if label_path is None and labelled_only:
            continue
        image_path, mask_path = photograph_and_mask(name, images[name], "STARE")
        samples.append(make_sample(name, image_path, label_path, mask_path))
    return samples


# --------------------------------------------------------------------------- CHASE_DB1

_CHASE_IMAGE = re.compile(r"^(image_(\d{2})[lr])\.(?:jpg|jpeg|png|tif|tiff|bmp)$", re.IGNORECASE)
_CHASE_LABEL = re.compile(r"^(image_\d{2}[lr])_(1stho|2ndho)\.(?:png|gif|tif|tiff|bmp|ppm)$", re.IGNORECASE)
CHASE_SPLITS = ("all", "training", "test")
#: CHASE_DB1's 28 images (14 children, left and right eye) and numpyseg's split by name: the
#: first 20 (children 01-10) for training, the last 8 (children 11-14) for test, as SA-UNet and
#: most later papers use.
CHASE_SPLIT_NAMES = {"all": tuple(f"Image_{child:02d}{eye}" for child in range(1, 15) for eye in "LR")}
CHASE_SPLIT_NAMES["training"] = CHASE_SPLIT_NAMES["all"][:20]
CHASE_SPLIT_NAMES["test"] = CHASE_SPLIT_NAMES["all"][20:]


def load_chase(root, split: str = "all", observer: int = 1) -> list[Sample]:
    """Load CHASE_DB1: images Image_01L.jpg with labels Image_01L_1stHO.png.

    Files are searched for by name anywhere below `root`, whatever the
    folders are called.  Several files named like one image (a copy with
    ``Images/Image_01L.jpg`` and ``FOV/Image_01L.png``) are told apart by
    content (`photograph_and_mask`): the binary one is used as the FOV mask;
    otherwise the FOV is derived from the image.  The split is by name
    (CHASE_SPLIT_NAMES); missing images of the split are warned about.

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
    images: dict[str, list[Path]] = {}
    labels: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        match = _CHASE_LABEL.match(path.name)
        if match:
            if match.group(2).lower() == tag:
                labels.setdefault(match.group(1).lower(), []).append(path)
            continue
        match = _CHASE_IMAGE.match(path.name)
        if match:
            images.setdefault(match.group(1).lower(), []).append(path)
    layout = "expected files Image_01L.jpg and labels Image_01L_1stHO.png"
    if not images:
        raise DataError(f"CHASE_DB1 folder {root} has no images named like Image_01L.jpg: "
                        f"{layout}{_archive_hint(root)}")
    wanted = CHASE_SPLIT_NAMES[split]
    found = [name for name in wanted if name.lower() in images]
    warn_missing("CHASE_DB1", split, wanted, found)
    samples = []
    for name in found:
        key = name.lower()
        if key not in labels:
            raise DataError(f"CHASE_DB1 image {images[key][0]} has no label {name}_"
                            f"{'1stHO' if tag == '1stho' else '2ndHO'}.png below {root}")
        image_path, mask_path = photograph_and_mask(name, images[key], "CHASE_DB1")
        label_path = _one_file(labels[key], "CHASE_DB1 label")
        samples.append(make_sample(image_path.stem, image_path, label_path, mask_path))
    return samples


# --------------------------------------------------------------------------- generic folder

def load_folder(images_dir, labels_dir=None, masks_dir=None) -> list[Sample]:
    """Load every image of a folder, with labels and FOV masks from other folders.

    Each image is paired with the one label (and mask) whose name matches by
    `names_match` ('21_training.tif' with '21_manual1.gif', 'Image_01L.jpg'
    with 'Image_01L_1stHO.png', 'im0001.ppm' with 'im0001.ah.ppm', '01.png'
    with '01.gif'); an image with none or several, or a label matching several
    images, raises DataError naming the files.  Content is checked as for
    every loader (`make_sample`).  Without `masks_dir` the FOV is derived from
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
