"""Image I/O, dataset loaders (real DRIVE; STARE / CHASE_DB1 / generic folders written in
their exact formats), FOV derivation, padding, and the one-line errors on bad input."""

import gzip
import io
from collections import deque

import numpy as np
import pytest
from PIL import Image

from numpyseg.data.datasets import (
    Sample, load_chase, load_dataset, load_drive, load_folder, load_stare, stare_split,
)
from numpyseg.data.fov import connected_components, derive_fov, fill_holes, largest_component
from numpyseg.data.io import DataError, read_image, read_label, read_mask, write_png
from numpyseg.data.padding import crop_to, default_pad_size, pad_to, pad_to_multiple
from numpyseg.data.synthetic import make_fundus
from numpyseg.errors import DataWarning


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message


def to_u8(image):
    return np.round(image * 255).astype(np.uint8)


def iou(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / (a | b).sum()


# ----------------------------------------------------------------------------- image I/O

def test_read_image_formats_and_modes(tmp_path, rng):
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for suffix in ("png", "tif", "ppm", "bmp"):
        Image.fromarray(rgb).save(tmp_path / f"a.{suffix}")
        out = read_image(tmp_path / f"a.{suffix}")
        assert out.dtype == np.float32 and out.shape == (9, 7, 3)
        np.testing.assert_array_equal(to_u8(out), rgb)
    write_ppm(tmp_path / "a.ppm.gz", rgb, compress=True)
    np.testing.assert_array_equal(to_u8(read_image(tmp_path / "a.ppm.gz")), rgb)

    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (9, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(to_u8(out[:, :, c]), gray)

    rgba = np.dstack([rgb, np.full((9, 7), 17, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(to_u8(read_image(tmp_path / "rgba.png")), rgb)

    deep = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png")[0, :, 1], deep[0] / 65535.0, atol=1e-6)

    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "p.gif")
    out = to_u8(read_image(tmp_path / "p.gif"))
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])

    smooth = np.dstack([*np.meshgrid(np.arange(16) * 16, np.arange(16) * 8, indexing="ij"), np.full((16, 16), 99)])
    smooth = smooth.astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg") * 255 - smooth).mean() < 3  # lossy but close


def test_read_label_rules(tmp_path, rng):
    truth = (rng.random((8, 6)) < 0.3).astype(np.uint8)
    Image.fromarray(truth * 255).save(tmp_path / "l255.gif")
    Image.fromarray(truth).save(tmp_path / "l01.png")
    Image.fromarray(np.dstack([truth * 255] * 3)).save(tmp_path / "rgb.ppm")
    Image.fromarray(truth.astype(bool)).save(tmp_path / "bits.png")
    # DRIVE's 2nd_manual style: palette indices 0/1 whose colours are near-black / near-white.
    drive2 = Image.fromarray(truth, mode="P")
    drive2.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    drive2.save(tmp_path / "pal.gif")
    # and the reverse palette convention (index 0 white): brightness decides.
    inverse = Image.fromarray(1 - truth, mode="P")
    inverse.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    inverse.save(tmp_path / "inv.gif")
    for name in ("l255.gif", "l01.png", "rgb.ppm", "bits.png", "pal.gif", "inv.gif"):
        label = read_label(tmp_path / name)
        assert label.dtype == np.uint8 and label.shape == (8, 6), name
        np.testing.assert_array_equal(label, truth, err_msg=name)
    np.testing.assert_array_equal(read_mask(tmp_path / "l255.gif"), truth)


def test_write_png_roundtrip_is_atomic(tmp_path, rng):
    image = rng.random((5, 4, 3)).astype(np.float32)
    path = write_png(tmp_path / "sub" / "x.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.round(image * 255).astype(np.uint8))
    write_png(path, np.array([[True, False]]))  # overwrite in place
    np.testing.assert_array_equal(np.asarray(Image.open(path)), [[255, 0]])
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]  # no temporary left over
    with pytest.raises(ValueError, match="got shape"):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 2)))


def test_unreadable_files_raise_one_line_data_error(tmp_path, rng):
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "missing.png")
    assert_one_line(error, "missing.png", "not found")

    (tmp_path / "junk.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "junk.png")
    assert_one_line(error, "junk.png", "not a readable image")

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "cut.png")
    assert_one_line(error, "cut.png", "cannot decode")
    with pytest.raises(DataError) as error:
        read_label(tmp_path / "cut.png")
    assert_one_line(error, "cut.png")

    (tmp_path / "bad.ppm.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "bad.ppm.gz")
    assert_one_line(error, "bad.ppm.gz")


# ----------------------------------------------------------------------------- FOV

def flood_fill_components(mask):
    """Reference 4-connected labelling by breadth-first search (slow, obvious)."""
    labels = np.zeros(mask.shape, np.int32)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        n += 1
        labels[y, x] = n
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = n
                    queue.append((ny, nx))
    return labels, n


@pytest.mark.parametrize("density", [0.3, 0.5, 0.6])
def test_connected_components_match_flood_fill(rng, density):
    for _ in range(5):
        mask = rng.random((23, 31)) < density
        labels, n = connected_components(mask)
        expected, m = flood_fill_components(mask)
        assert n == m
        # the same partition: labels map one-to-one onto the reference labels
        pairs = np.unique(np.stack([labels[mask], expected[mask]]), axis=1)
        assert pairs.shape[1] == n and np.array_equal(labels == 0, ~mask)


def test_fill_holes_and_largest_component():
    mask = np.zeros((9, 9), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False          # a hole
    mask[7, 7:9] = True         # a small separate blob touching the border
    filled = fill_holes(mask)
    assert filled[3, 3] and filled[7, 8] and not filled[0, 0]
    big = largest_component(mask)
    assert big[1, 1] and not big[7, 7] and not big[3, 3]


def test_derive_fov_on_synthetic_image():
    sample = make_fundus((160, 200), rng=3)
    assert iou(derive_fov(sample.image), sample.fov) > 0.97
    assert derive_fov(np.zeros((10, 10, 3))).sum() == 0


# ----------------------------------------------------------------------------- padding

@pytest.mark.parametrize("shape", [(584, 565), (584, 565, 3), (2, 584, 565, 1)])
def test_pad_and_crop_are_inverse(rng, shape):
    array = rng.random(shape).astype(np.float32)
    padded = pad_to(array, 592)
    spatial = (1, 2) if len(shape) == 4 else (0, 1)
    assert [padded.shape[a] for a in spatial] == [592, 592]
    hw = [shape[a] for a in spatial]
    np.testing.assert_array_equal(crop_to(padded, hw), array)
    index = [slice(None)] * len(shape)
    index[spatial[0]] = slice(hw[0], None)
    assert not padded[tuple(index)].any()  # zeros at the bottom
    multiple = pad_to_multiple(array, 8)
    assert [multiple.shape[a] for a in spatial] == [584, 568]
    np.testing.assert_array_equal(crop_to(multiple, hw), array)


def test_pad_sizes_and_errors():
    assert default_pad_size("DRIVE") == (592, 592)
    assert default_pad_size("stare") == (704, 704)
    assert default_pad_size("chase", (960, 999)) == (960, 1000)
    assert pad_to(np.ones((3, 5)), (8, 16)).shape == (8, 16)
    with pytest.raises(ValueError, match="smaller size"):
        pad_to(np.ones((10, 10)), 8)
    with pytest.raises(ValueError, match="pass shape"):
        default_pad_size("chase")


# ----------------------------------------------------------------------------- real DRIVE

def test_load_drive_real(drive_root):
    for split, first in (("training", "21_training"), ("test", "01_test")):
        samples = load_drive(drive_root, split)
        assert len(samples) == 20 and samples[0].name == first
        for s in samples:
            assert s.image.shape == (584, 565, 3) and s.image.dtype == np.float32
            assert 0.0 <= s.image.min() and s.image.max() <= 1.0
            assert s.label.shape == s.fov.shape == (584, 565)
            assert s.label.dtype == s.fov.dtype == np.uint8
            assert set(np.unique(s.label)) == {0, 1} and set(np.unique(s.fov)) == {0, 1}
            assert 0.05 < s.label.mean() < 0.2 and 0.6 < s.fov.mean() < 0.8
            assert s.label[s.fov == 0].mean() < 0.01  # vessels lie inside the FOV
    second = load_drive(drive_root, "test", observer=2)
    first = load_drive(drive_root, "test")
    agreement = np.mean([(a.label == b.label).mean() for a, b in zip(first, second)])
    assert 0.9 < agreement < 0.99  # two observers: close, not identical
    assert len(load_dataset("drive", drive_root, "all")) == 40


def test_derive_fov_reproduces_drive_masks(drive_root):
    samples = load_drive(drive_root, "training")[:5]
    scores = [iou(derive_fov(s.image), s.fov) for s in samples]
    assert min(scores) > 0.98, scores


# ----------------------------------------------------------------------------- STARE / CHASE / folder

def write_ppm(path, array, compress=False):
    image = Image.fromarray(array)
    if compress:
        buffer = io.BytesIO()
        image.save(buffer, format="PPM")
        path.write_bytes(gzip.compress(buffer.getvalue()))
    else:
        image.save(path, format="PPM")


def test_load_stare_exact_formats(tmp_path):
    (tmp_path / "stare-images").mkdir()
    (tmp_path / "labels-ah").mkdir()
    (tmp_path / "labels-vk").mkdir()
    made = {}
    for i, (compress_image, compress_label) in enumerate([(True, True), (False, False), (True, False)], 1):
        sample = make_fundus((605, 700), rng=i)
        made[f"im{i:04d}"] = sample
        write_ppm(tmp_path / "stare-images" / f"im{i:04d}.ppm{'.gz' if compress_image else ''}",
                  to_u8(sample.image), compress_image)
        if i < 3:  # im0003 has no label, like most of the STARE photographs
            label_rgb = np.dstack([sample.label * 255] * 3).astype(np.uint8)
            write_ppm(tmp_path / "labels-ah" / f"im{i:04d}.ah.ppm{'.gz' if compress_label else ''}",
                      label_rgb, compress_label)
    Image.fromarray(np.zeros((605, 700), np.uint8)).save(tmp_path / "labels-vk" / "im0001.vk.ppm")

    samples = load_stare(tmp_path)
    assert [s.name for s in samples] == ["im0001", "im0002"]
    for s in samples:
        truth = made[s.name]
        assert s.image.shape == (605, 700, 3)
        np.testing.assert_array_equal(to_u8(s.image), to_u8(truth.image))
        np.testing.assert_array_equal(s.label, truth.label)  # the 'ah' label, not the empty 'vk' one
        assert iou(s.fov, truth.fov) > 0.97  # derived from the image
    everything = load_stare(tmp_path, labelled_only=False)
    assert [s.name for s in everything] == ["im0001", "im0002", "im0003"] and everything[2].label is None
    assert load_stare(tmp_path, observer="vk")[0].label.sum() == 0
    # one flat folder works too, and the dispatcher
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in list((tmp_path / "stare-images").iterdir()) + list((tmp_path / "labels-ah").iterdir()):
        (flat / path.name).write_bytes(path.read_bytes())
    assert [s.name for s in load_dataset("stare", flat, "all")] == ["im0001", "im0002"]
    with pytest.raises(DataError) as error:
        load_dataset("stare", flat, "validation")
    assert_one_line(error, "STARE split")


def test_stare_split_holds_out_every_fourth_image_of_the_twenty():
    names = ["im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082",
             "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240", "im0255", "im0291",
             "im0319", "im0324"]
    pixel = np.zeros((1, 1, 3), np.float32)
    samples = [Sample(name, pixel, None, np.ones((1, 1), np.uint8)) for name in reversed(names)]
    test = [s.name for s in stare_split(samples, "test")]
    training = [s.name for s in stare_split(samples, "training")]
    assert test == ["im0004", "im0081", "im0163", "im0240", "im0324"]  # as documented
    assert len(training) == 15 and not set(training) & set(test)
    assert sorted(training + test) == names == [s.name for s in stare_split(samples, "all")]


def test_load_chase_format(tmp_path):
    names = ["Image_01L", "Image_01R", "Image_11L"]
    made = {}
    for i, name in enumerate(names):
        sample = make_fundus((96, 100), rng=10 + i)
        made[name] = sample
        Image.fromarray(to_u8(sample.image)).save(tmp_path / f"{name}.jpg", quality=95)
        Image.fromarray(sample.label * 255).save(tmp_path / f"{name}_1stHO.png")
        Image.fromarray(np.zeros_like(sample.label)).save(tmp_path / f"{name}_2ndHO.png")
    with pytest.warns(DataWarning, match="all split: 25 of its 28 images are missing"):
        samples = load_chase(tmp_path)
    assert [s.name for s in samples] == names
    for s in samples:
        np.testing.assert_array_equal(s.label, made[s.name].label)
        assert np.abs(s.image - made[s.name].image).mean() < 0.03  # JPEG
        assert iou(s.fov, made[s.name].fov) > 0.95
    with pytest.warns(DataWarning, match="training split: 18 of its 20"):
        assert [s.name for s in load_chase(tmp_path, "training")] == names[:2]
    with pytest.warns(DataWarning, match="test split: 7 of its 8"):
        assert [s.name for s in load_dataset("chase", tmp_path, "test")] == names[2:]
    with pytest.warns(DataWarning):
        assert load_chase(tmp_path, observer=2)[0].label.sum() == 0


def test_load_folder_matching_rules(tmp_path, rng):
    images, labels, masks = (tmp_path / d for d in ("images", "labels", "masks"))
    for d in (images, labels, masks):
        d.mkdir()
    truth = {}
    for stem, label_name, mask_name in [("01", "01.gif", "01_mask.png"),
                                        ("Image_02", "Image_02_manual1.png", "Image_02.png"),
                                        ("21_training", "21_manual1.gif", "21_training_mask.gif")]:
        sample = make_fundus((40, 48), rng=len(truth))
        truth[stem] = sample
        Image.fromarray(to_u8(sample.image)).save(images / f"{stem}.png")
        Image.fromarray(sample.label * 255).save(labels / label_name)
        Image.fromarray(sample.fov * 255).save(masks / mask_name)
    samples = load_folder(images, labels, masks)
    assert [s.name for s in samples] == ["01", "21_training", "Image_02"]
    for s in samples:
        np.testing.assert_array_equal(s.label, truth[s.name].label)
        np.testing.assert_array_equal(s.fov, truth[s.name].fov)
    unlabelled = load_folder(images)
    assert all(s.label is None for s in unlabelled)
    assert iou(unlabelled[0].fov, truth["01"].fov) > 0.9  # derived
    assert len(load_dataset("folder", tmp_path)) == 3

    Image.fromarray(np.zeros((40, 48), np.uint8)).save(labels / "01_other.png")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(labels / "Image_02_manual2.png")
    with pytest.raises(DataError) as error:
        load_folder(images, labels)
    assert_one_line(error, "Image_02.png", "several")
    (images / "03.png").write_bytes((images / "01.png").read_bytes())
    with pytest.raises(DataError) as error:
        load_folder(images, masks_dir=masks)
    assert_one_line(error, "03.png", "no mask")


# ----------------------------------------------------------------------------- bad input

def write_fake_drive(root, label_size=(584, 565)):
    for sub in ("images", "1st_manual", "mask"):
        (root / "training" / sub).mkdir(parents=True)
    Image.fromarray(np.full((584, 565, 3), 120, np.uint8)).save(root / "training/images/21_training.tif")
    Image.fromarray(np.zeros(label_size, np.uint8)).save(root / "training/1st_manual/21_manual1.gif")
    Image.fromarray(np.full((584, 565), 255, np.uint8)).save(root / "training/mask/21_training_mask.gif")


def test_bad_folders_raise_one_line_data_error(tmp_path):
    with pytest.raises(DataError) as error:
        load_drive(tmp_path / "nowhere")
    assert_one_line(error, "nowhere", "does not exist")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "images").mkdir()
    with pytest.raises(DataError) as error:
        load_drive(tmp_path / "wrong", "training")
    assert_one_line(error, "has no training/images", "expected the standard DRIVE layout")
    with pytest.raises(DataError) as error:
        load_stare(tmp_path / "wrong")
    assert_one_line(error, "no images named like im0001.ppm")
    (tmp_path / "wrong" / "stare-images.tar").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_stare(tmp_path / "wrong")
    assert_one_line(error, "stare-images.tar: extract it first")
    with pytest.raises(DataError) as error:
        load_chase(tmp_path / "wrong")
    assert_one_line(error, "Image_01L.jpg")
    with pytest.raises(DataError) as error:
        load_dataset("hrf", tmp_path)
    assert_one_line(error, "unknown dataset")
    with pytest.raises(DataError) as error:
        load_drive(tmp_path / "wrong", "validation")
    assert_one_line(error, "split")


def test_fake_drive_layout_loads_and_size_mismatch_is_named(tmp_path):
    good = tmp_path / "good"
    write_fake_drive(good)
    with pytest.warns(DataWarning, match="19 of its 20 images are missing"):
        (sample,) = load_drive(good)
    assert sample.name == "21_training" and sample.fov.all() and not sample.label.any()
    bad = tmp_path / "bad"
    write_fake_drive(bad, label_size=(580, 565))
    with pytest.raises(DataError) as error, pytest.warns(DataWarning, match="missing"):
        load_drive(bad)
    assert_one_line(error, "21_manual1.gif", "21_training.tif", "580x565", "584x565")


def test_truncated_image_in_dataset_is_named(tmp_path):
    root = tmp_path / "drive"
    write_fake_drive(root)
    path = root / "training/images/21_training.tif"
    Image.open(path).save(root / "training/images/22_training.png")
    data = (root / "training/images/22_training.png").read_bytes()
    (root / "training/images/22_training.png").write_bytes(data[: len(data) // 3])
    for old, new in (("1st_manual/21_manual1.gif", "1st_manual/22_manual1.gif"),
                     ("mask/21_training_mask.gif", "mask/22_training_mask.gif")):
        (root / "training" / new).write_bytes((root / "training" / old).read_bytes())
    with pytest.raises(DataError) as error, pytest.warns(DataWarning, match="missing"):
        load_drive(root)
    assert_one_line(error, "22_training.png")


def test_sample_checks_shapes():
    with pytest.raises(ValueError, match="label shape"):
        Sample("x", np.zeros((4, 4, 3), np.float32), np.zeros((4, 5), np.uint8), np.zeros((4, 4), np.uint8))
