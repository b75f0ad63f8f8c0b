"""How files are read: orientation, value ranges, label encodings, file pairing, roles by
content, splits by name, refused files and damaged checkpoints.

Every file here is generated (a few pixels to 64 x 64) with the property under test; the
expected values are computed from the generating arrays with NumPy, independently of the
reader.
"""

import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from numpyseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpyseg.data.datasets import (CHASE_SPLIT_NAMES, DRIVE_SPLIT_NAMES, STARE_LABELLED, STARE_TEST, Sample,
                                    load_chase, load_drive, load_folder, load_stare, names_match, stare_split)
from numpyseg.data.io import MAX_PIXELS_ENV, DataError, read_image, read_label, read_mask
from numpyseg.data.synthetic import make_fundus
from numpyseg.errors import DataWarning

ORIENTATION = 0x0112  # the EXIF tag


def displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for pixels stored with an EXIF orientation (the EXIF 2.3 table, in NumPy)."""
    return {
        1: lambda a: a,
        2: np.fliplr,                                  # mirrored left-right
        3: lambda a: np.rot90(a, 2),                   # upside down
        4: np.flipud,                                  # mirrored top-bottom
        5: lambda a: np.swapaxes(a, 0, 1),             # mirrored along the main diagonal
        6: lambda a: np.rot90(a, -1),                  # stored 90 degrees anticlockwise: turn clockwise
        7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),  # mirrored along the other diagonal
        8: lambda a: np.rot90(a, 1),                   # stored 90 degrees clockwise: turn anticlockwise
    }[orientation](stored)


def save(image: Image.Image, path, orientation: int = 1, **options):
    """Save with an EXIF orientation tag (when not 1) and return the path."""
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif
    image.save(path, **options)
    return path


def read_quietly(reader, path):
    """reader(path) and the messages of the DataWarnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = reader(path)
    return value, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def to_u8(image):
    return np.round(image * 255).astype(np.uint8)


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message


# ----------------------------------------------------------------------------- read_image sweep
#
# Each case: (mode, value range) -> a function of (rng, H, W) giving the PIL image to save and
# the float RGB pixels in [0, 1] that read_image must return, and the text of the warning it
# must give (None: no warning).

def _grey8(rng, h, w):
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _rgb8(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _repeat(grey):
    return np.repeat(grey[:, :, None], 3, axis=2)


def case_l(rng, h, w):
    g = _grey8(rng, h, w)
    return Image.fromarray(g), _repeat(g / 255.0), None


def case_rgb(rng, h, w):
    c = _rgb8(rng, h, w)
    return Image.fromarray(c), c / 255.0, None


def case_rgba(rng, h, w):
    c = _rgb8(rng, h, w)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return Image.fromarray(np.dstack([c, alpha]), mode="RGBA"), c / 255.0, None  # alpha ignored


def case_p(rng, h, w):
    index = rng.integers(0, 4, (h, w), dtype=np.uint8)
    palette = np.array([[200, 10, 30], [0, 0, 0], [17, 99, 250], [255, 255, 255]], np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.ravel().tolist())
    return image, palette[index] / 255.0, None


def case_p_transparent(rng, h, w):
    image, expected, _ = case_p(rng, h, w)
    image.info["transparency"] = 0  # the stored colour is used
    return image, expected, None


def case_cmyk(rng, h, w):
    cmyk = rng.integers(0, 256, (h, w, 4), dtype=np.uint8).astype(np.float64)
    rgb = np.round((255 - cmyk[:, :, :3]) * (255 - cmyk[:, :, 3:]) / 255)  # Pillow's CMYK -> RGB
    return Image.fromarray(cmyk.astype(np.uint8), mode="CMYK"), rgb / 255.0, None


def case_la(rng, h, w):
    g = _grey8(rng, h, w)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return Image.fromarray(np.dstack([g, alpha]), mode="LA"), _repeat(g / 255.0), None


def case_1(rng, h, w):
    bits = rng.random((h, w)) < 0.5
    return Image.fromarray(bits), _repeat(bits.astype(np.float64)), None


def _sixteen(values, mode):
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16))
    return Image.fromarray(values.astype(np.int32), mode="I")


def _deep_case(mode, bits, nominal=16):
    def case(rng, h, w):
        top = 2 ** bits - 1
        values = rng.integers(0, top + 1, (h, w))
        values.flat[0] = top  # the data reaches the top of its range
        warning = None if bits == nominal else f"read as {bits}-bit data"
        return _sixteen(values, mode), _repeat(values / top), warning
    return case


def _float_case(top):
    def case(rng, h, w):
        values = (rng.random((h, w)) * top).astype(np.float32)
        values.flat[0] = top
        warning = None if top == 1 else f"read as 0..{top:g}"
        return Image.fromarray(values, mode="F"), _repeat(values.astype(np.float64) / top), warning
    return case


IMAGE_CASES = {
    "L": case_l, "RGB": case_rgb, "RGBA": case_rgba, "P": case_p, "P-transparency": case_p_transparent,
    "CMYK": case_cmyk, "LA": case_la, "1": case_1,
    "I;16-16bit": _deep_case("I;16", 16), "I;16-12bit": _deep_case("I;16", 12),
    "I;16-8bit": _deep_case("I;16", 8), "I-16bit": _deep_case("I", 16), "I-10bit": _deep_case("I", 10),
    "I-24bit": _deep_case("I", 24, nominal=32),
    "F-0..1": _float_case(1), "F-0..255": _float_case(255), "F-0..65535": _float_case(65535),
}
SIZES = [(1, 1), (3, 5), (64, 48)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("case", IMAGE_CASES)
def test_read_image_sweep(tmp_path, case, orientation, size):
    """Every mode x value range x EXIF orientation x size: the displayed pixels, scaled right."""
    rng = np.random.default_rng(zlib.crc32(repr((case, orientation, size)).encode()))
    image, stored, warning = IMAGE_CASES[case](rng, *size)
    path = save(image, tmp_path / "x.tif", orientation)
    out, warned = read_quietly(read_image, path)
    expected = displayed(stored, orientation)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)
    if warning is None:
        assert warned == []
    else:
        assert len(warned) == 1 and warning in warned[0] and "x.tif" in warned[0]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_phone_jpeg_reads_upright_and_pairs_with_an_upright_label(tmp_path, orientation):
    """A JPEG stored sideways (EXIF orientation 2-8) reads in its displayed orientation, so a label
    drawn on the displayed picture has the same size and lies on the same pixels."""
    truth = make_fundus((40, 56), rng=orientation)  # as displayed
    stored_of = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}  # stored = displayed^-1 (6 <-> 8)
    stored = displayed(to_u8(truth.image), stored_of[orientation])
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    save(Image.fromarray(stored), tmp_path / "images" / "phone.jpg", orientation, quality=95)
    Image.fromarray(truth.label * 255).save(tmp_path / "labels" / "phone.png")
    (sample,) = load_folder(tmp_path / "images", tmp_path / "labels")
    assert sample.image.shape == (40, 56, 3)
    assert np.abs(sample.image - truth.image).mean() < 0.03  # JPEG: close, in the upright orientation
    np.testing.assert_array_equal(sample.label, truth.label)
    # and the label itself may be stored rotated too
    save(Image.fromarray(displayed(truth.label * 255, stored_of[orientation])), tmp_path / "l.png", orientation)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), truth.label)


# ----------------------------------------------------------------------------- read_label sweep

def _truth(rng, h=24, w=32):
    """A label with vessels of 2-4 pixels' width (about 15 % vessel)."""
    label = np.zeros((h, w), np.uint8)
    for _ in range(4):
        if rng.random() < 0.5:
            row, width = rng.integers(0, h - 4), rng.integers(2, 5)
            label[row:row + width, :] = 1
        else:
            col, width = rng.integers(0, w - 4), rng.integers(2, 5)
            label[:, col:col + width] = 1
    return label


def enc_0_255(truth, path):
    Image.fromarray(truth * 255).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_0_1(truth, path):
    Image.fromarray(truth).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_palette(truth, path):
    """DRIVE's 2nd_manual style: indices 0/1, colours near-black / near-white."""
    image = Image.fromarray(truth, mode="P")
    image.putpalette([4, 2, 4, 252, 254, 252])
    image.save(path.with_suffix(".gif"))
    return path.with_suffix(".gif"), None


def enc_palette_inverted(truth, path):
    """Palette in the other order: index 0 is white (vessel), index 1 black."""
    image = Image.fromarray(1 - truth, mode="P")
    image.putpalette([255, 255, 255, 0, 0, 0])
    image.save(path.with_suffix(".gif"))
    return path.with_suffix(".gif"), None


def enc_red_strokes(truth, path):
    colour = np.zeros(truth.shape + (3,), np.uint8)
    colour[truth == 1] = (255, 0, 0)
    Image.fromarray(colour).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_jpeg(truth, path):
    Image.fromarray(truth * 255).save(path.with_suffix(".jpg"), quality=90)
    return path.with_suffix(".jpg"), "grey"


def enc_jpeg_colour(truth, path):
    Image.fromarray(np.dstack([truth * 255] * 3)).save(path.with_suffix(".jpg"), quality=90)
    return path.with_suffix(".jpg"), "grey"


def enc_antialiased(truth, path):
    """Drawn at 3x and reduced by area averaging: the label is the pixels more than half covered."""
    fine = np.kron(truth, np.ones((3, 3), np.uint8)) * 255
    fine[::3, :] = np.roll(fine[::3, :], 1, axis=1)  # edges that cut through pixels
    coverage = fine.reshape(truth.shape[0], 3, truth.shape[1], 3).mean(axis=(1, 3)) / 255
    Image.fromarray(fine).resize(truth.shape[::-1], Image.Resampling.BOX).save(path.with_suffix(".png"))
    truth[:] = coverage > 0.5
    return path.with_suffix(".png"), "grey"


def enc_alpha_transparent(truth, path):
    """White vessels on a transparent background whose (hidden) colour is white too."""
    rgba = np.full(truth.shape + (4,), 255, np.uint8)
    rgba[:, :, 3] = truth * 255
    Image.fromarray(rgba, mode="RGBA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_alpha_opaque(truth, path):
    rgba = np.dstack([truth * 255] * 3 + [np.full(truth.shape, 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_16bit(truth, path):
    Image.fromarray(truth.astype(np.uint16) * 65535).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_16bit_holding_0_255(truth, path):
    Image.fromarray(truth.astype(np.uint16) * 255).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), "read as 8-bit data"


def enc_16bit_holding_0_1(truth, path):
    Image.fromarray(truth.astype(np.uint16)).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_bits(truth, path):
    Image.fromarray(truth.astype(bool)).save(path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_float_0_255(truth, path):
    Image.fromarray(truth.astype(np.float32) * 255, mode="F").save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), "read as 0..255"


def enc_la(truth, path):
    """Greyscale with an opaque alpha channel."""
    Image.fromarray(np.dstack([truth * 255, np.full(truth.shape, 255, np.uint8)]), mode="LA").save(
        path.with_suffix(".png"))
    return path.with_suffix(".png"), None


def enc_cmyk(truth, path):
    """White vessels (no ink) on black (full K) in a CMYK TIFF."""
    cmyk = np.zeros(truth.shape + (4,), np.uint8)
    cmyk[:, :, 3] = (1 - truth) * 255
    Image.fromarray(cmyk, mode="CMYK").save(path.with_suffix(".tif"))
    return path.with_suffix(".tif"), None


LABEL_ENCODINGS = {
    "0/255": enc_0_255, "0/1": enc_0_1, "palette": enc_palette, "palette-inverted": enc_palette_inverted,
    "red-strokes": enc_red_strokes, "jpeg": enc_jpeg, "jpeg-colour": enc_jpeg_colour,
    "antialiased": enc_antialiased, "alpha-transparent": enc_alpha_transparent, "alpha-opaque": enc_alpha_opaque,
    "16bit": enc_16bit, "16bit-0/255": enc_16bit_holding_0_255, "16bit-0/1": enc_16bit_holding_0_1,
    "1bit": enc_bits, "float-0..255": enc_float_0_255, "LA": enc_la, "CMYK": enc_cmyk,
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("encoding", LABEL_ENCODINGS)
def test_read_label_encodings(tmp_path, encoding, seed):
    """Every label encoding reads as the same 0/1 vessel map; lossy ones are warned about."""
    truth = _truth(np.random.default_rng(seed))
    path, warning = LABEL_ENCODINGS[encoding](truth, tmp_path / "label")
    label, warned = read_quietly(read_label, path)
    assert label.dtype == np.uint8 and label.shape == truth.shape
    np.testing.assert_array_equal(label, truth)
    if warning is None:
        assert warned == []
    else:
        assert len(warned) == 1 and warning in warned[0] and path.name in warned[0]


def test_drive_label_saved_as_jpeg_reads_as_the_original(drive_root, tmp_path):
    """DRIVE's 01_manual1.gif re-saved as JPEG (quality 90) gives the original label back (nearly)."""
    original = read_label(drive_root / "test" / "1st_manual" / "01_manual1.gif")
    Image.fromarray(original * 255).save(tmp_path / "01_manual1.jpg", quality=90)
    with pytest.warns(DataWarning, match="grey"):
        again = read_label(tmp_path / "01_manual1.jpg")
    assert (again == original).mean() > 0.995
    assert abs(int(again.sum()) - int(original.sum())) < 0.02 * original.sum()


def test_implausible_labels_are_warned_about(tmp_path):
    truth = _truth(np.random.default_rng(3))
    Image.fromarray((1 - truth) * 255).save(tmp_path / "inverted.png")  # dark vessels on white
    with pytest.warns(DataWarning, match="is vessel: is it inverted"):
        label = read_label(tmp_path / "inverted.png")
    np.testing.assert_array_equal(label, 1 - truth)  # read by the documented rule, and said so
    # a field-of-view mask is mostly 1: no warning for it
    _, warned = read_quietly(read_mask, tmp_path / "inverted.png")
    assert warned == []


# ----------------------------------------------------------------------------- value ranges

def test_float_tiff_holding_0_255_is_not_clipped_to_white(tmp_path):
    """An ImageJ / MATLAB export: float32 TIFF with values 0..255."""
    sample = make_fundus((48, 64), rng=5)
    Image.fromarray((sample.image[:, :, 1] * 255).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.warns(DataWarning, match="read as 0..255"):
        image = read_image(tmp_path / "f.tif")
    np.testing.assert_allclose(image[:, :, 0], sample.image[:, :, 1], atol=1e-6)
    assert image.max() < 1.0  # not clipped to white


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                          (-3.0, "negative"), (1e6, "fit none of the ranges")])
def test_unusable_float_values_are_refused(tmp_path, bad, message):
    values = np.full((4, 5), 0.5, np.float32)
    values[1, 2] = bad
    Image.fromarray(values, mode="F").save(tmp_path / "bad.tif")
    for reader in (read_image, read_label):
        with pytest.raises(DataError) as error:
            reader(tmp_path / "bad.tif")
        assert_one_line(error, "bad.tif", message)


# ----------------------------------------------------------------------------- refused files

def _png_claiming(width, height, path):
    """A small PNG whose header claims width x height (its data is a 1 x 1 image)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")
    data[start + 4:start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start:start + 17])) & 0xFFFFFFFF
    data[start + 17:start + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_huge_image_is_refused_in_one_line(tmp_path, monkeypatch):
    path = _png_claiming(14000, 14000, tmp_path / "huge.png")  # 196 megapixels
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_one_line(error, "huge.png", "too large", "14000x14000", "resize", MAX_PIXELS_ENV)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(200_000_000))  # allowed now: decoding is tried (and fails)
    with pytest.raises(DataError) as error:
        read_image(path)
    assert "too large" not in str(error.value) and "cannot decode" in str(error.value)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_one_line(error, MAX_PIXELS_ENV, "lots")


def test_empty_folder_and_broken_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    Image.new("RGB", (32, 32), (90, 40, 20)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cases = [("empty.png", "empty"), ("folder.png", "is a folder"), ("cut.jpg", "cannot decode")]
    for reader in (read_image, read_label, read_mask):
        for name, fragment in cases:
            with pytest.raises(DataError) as error:
                reader(tmp_path / name)
            assert_one_line(error, name, fragment)


def test_palette_transparency_is_background_in_a_label(tmp_path):
    truth = _truth(np.random.default_rng(4))
    image = Image.fromarray(truth, mode="P")
    image.putpalette([255, 255, 255, 255, 255, 255])  # both white: only transparency tells them apart
    image.save(tmp_path / "t.png", transparency=0)
    np.testing.assert_array_equal(read_label(tmp_path / "t.png"), truth)


# ----------------------------------------------------------------------------- pairing by name

@pytest.mark.parametrize("image, other", [
    ("21_training", "21_manual1"), ("21_training", "21_training_mask"), ("01_test", "01_test_mask"),
    ("Image_01L", "Image_01L_1stHO"), ("im0001", "im0001.ah"), ("01_test", "01_test"),
    ("01_test", "01_manual2"), ("scan-3", "scan-3-mask"), ("IMAGE_01L", "image_01l_1stho"),
])
def test_names_that_pair(image, other):
    assert names_match(image, other)


@pytest.mark.parametrize("image, other", [
    ("p7_OD", "p7_OS"), ("12", "120"), ("120", "12_mask"), ("21_training", "22_manual1"),
    ("Image_01L", "Image_01R_1stHO"), ("im0001", "im00010.ah"), ("01_test", "01_training_mask"),
    ("x", "y.ah"),
])
def test_names_that_do_not_pair(image, other):
    assert not names_match(image, other)


def _folder_pair(root, image_names, label_names, rng=0):
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for i, name in enumerate(image_names):
        sample = make_fundus((32, 40), rng=rng + i)
        Image.fromarray(to_u8(sample.image)).save(images / name)
    for name in label_names:
        Image.fromarray(np.zeros((32, 40), np.uint8)).save(labels / name)
    return images, labels


def test_other_eye_is_not_paired(tmp_path):
    images, labels = _folder_pair(tmp_path, ["p7_OD.tif"], ["p7_OS.gif"])
    with pytest.raises(DataError) as error:
        load_folder(images, labels)
    assert_one_line(error, "p7_OD.tif", "no label", "p7_OS.gif")


def test_twelve_is_not_one_hundred_and_twenty(tmp_path):
    images, labels = _folder_pair(tmp_path, ["12.png", "120.png"], ["120.png"])
    with pytest.raises(DataError) as error:
        load_folder(images, labels)
    assert_one_line(error, "12.png", "no label")


def test_one_label_for_two_images_is_refused(tmp_path):
    images, labels = _folder_pair(tmp_path, ["21_training.png", "21_test.png"], ["21_manual1.gif"])
    with pytest.raises(DataError) as error:
        load_folder(images, labels)
    assert_one_line(error, "21_manual1.gif", "several images", "21_test.png", "21_training.png")


def test_dataset_names_pair_in_a_folder(tmp_path):
    names = {"21_training.tif": "21_manual1.gif", "Image_01L.jpg": "Image_01L_1stHO.png",
             "im0001.ppm": "im0001.ah.ppm", "01_test.png": "01_test.gif"}
    images, labels = _folder_pair(tmp_path, list(names), [])
    truth = {}
    for i, (image, label) in enumerate(names.items()):
        truth[image.split(".")[0]] = _truth(np.random.default_rng(i), 32, 40)
        Image.fromarray(truth[image.split(".")[0]] * 255).save(labels / label)
    samples = load_folder(images, labels)
    assert sorted(s.name for s in samples) == sorted(truth)
    for s in samples:
        np.testing.assert_array_equal(s.label, truth[s.name])


# ----------------------------------------------------------------------------- roles by content

def _photo(path, shape=(40, 48), rng=0):
    sample = make_fundus(shape, rng=rng)
    Image.fromarray(to_u8(sample.image)).save(path)
    return sample


def _chase_copy(root, folders=("Images", "Labels", "FOV")):
    """A CHASE_DB1 copy with the FOV masks named like the images (Image_01L.png)."""
    made = {}
    for d in folders:
        (root / d).mkdir()
    for i, name in enumerate(["Image_01L", "Image_11R"]):
        sample = _photo(root / folders[0] / f"{name}.jpg", rng=20 + i)
        Image.fromarray(sample.label * 255).save(root / folders[1] / f"{name}_1stHO.png")
        fov = np.zeros_like(sample.fov)
        fov[2:-2, 3:-3] = 1  # not the derived disc, so its use is visible
        Image.fromarray(fov * 255).save(root / folders[2] / f"{name}.png")
        made[name] = (sample, fov)
    return made


@pytest.mark.parametrize("folders", [("Images", "Labels", "FOV"), ("z_photos", "y_vessels", "a_masks")])
def test_chase_fov_masks_named_like_images_are_told_apart(tmp_path, folders):
    made = _chase_copy(tmp_path, folders)
    with pytest.warns(DataWarning, match="missing"):
        samples = load_chase(tmp_path)
    assert [s.name for s in samples] == ["Image_01L", "Image_11R"]
    for s in samples:
        sample, fov = made[s.name]
        assert np.abs(s.image - sample.image).mean() < 0.03  # the photograph (JPEG), not the disc
        np.testing.assert_array_equal(s.fov, fov)  # the FOV file is used as the FOV
        np.testing.assert_array_equal(s.label, sample.label)


def test_two_photographs_for_one_name_are_refused(tmp_path):
    _chase_copy(tmp_path)
    _photo(tmp_path / "FOV" / "Image_01L.tif", rng=7)
    with pytest.raises(DataError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        load_chase(tmp_path)
    assert_one_line(error, "Image_01L.jpg", "Image_01L.tif", "Image_01L.png", "2 look like photographs")


def test_stare_fov_files_named_like_images_are_used(tmp_path):
    (tmp_path / "stare-images").mkdir()
    (tmp_path / "labels-ah").mkdir()
    (tmp_path / "fov").mkdir()
    sample = _photo(tmp_path / "stare-images" / "im0001.ppm")
    Image.fromarray(sample.label * 255).save(tmp_path / "labels-ah" / "im0001.ah.ppm")
    Image.fromarray(sample.fov * 255).save(tmp_path / "fov" / "im0001.png")
    (loaded,) = load_stare(tmp_path)
    np.testing.assert_array_equal(to_u8(loaded.image), to_u8(sample.image))
    np.testing.assert_array_equal(loaded.fov, sample.fov)


def test_swapped_folders_are_refused(tmp_path):
    images, labels = _folder_pair(tmp_path, ["a.png"], [])
    truth = _truth(np.random.default_rng(0), 32, 40)
    Image.fromarray(truth * 255).save(labels / "a.png")
    with pytest.raises(DataError) as error:
        load_folder(labels, images)  # labels given as images
    assert_one_line(error, "a.png", "looks like a mask or label")
    (tmp_path / "masks").mkdir()
    Image.open(images / "a.png").save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError) as error:
        load_folder(images, labels, tmp_path / "masks")  # a photograph given as the mask
    assert_one_line(error, "mask", "a.png", "looks like a photograph")


def _fake_drive(root, split, names):
    for sub in ("images", "1st_manual", "mask"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        sample = _photo(root / split / "images" / f"{name}.tif", rng=i)
        number = name.split("_")[0]
        Image.fromarray(sample.label * 255).save(root / split / "1st_manual" / f"{number}_manual1.gif")
        Image.fromarray(sample.fov * 255).save(root / split / "mask" / f"{name}_mask.gif")


def test_drive_mask_in_the_images_folder_is_refused(tmp_path):
    _fake_drive(tmp_path, "training", ["21_training"])
    mask = tmp_path / "training" / "mask" / "21_training_mask.gif"
    Image.open(mask).save(tmp_path / "training" / "images" / "21_training.tif")
    with pytest.raises(DataError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        load_drive(tmp_path)
    assert_one_line(error, "21_training.tif", "looks like a mask or label")


# ----------------------------------------------------------------------------- splits by name

def _stare_samples(names):
    pixel = np.zeros((1, 1, 3), np.float32)
    return [Sample(name, pixel, None, np.ones((1, 1), np.uint8)) for name in names]


STARE_COPY_18 = [n for n in STARE_LABELLED if n not in ("im0235", "im0236")]  # like the shared copy


def test_stare_split_is_fixed_by_name_with_18_images():
    samples = _stare_samples(STARE_COPY_18)
    test, warned = read_quietly(lambda s: stare_split(s, "test"), samples)
    assert [s.name for s in test] == ["im0004", "im0081", "im0163", "im0240", "im0324"] == list(STARE_TEST)
    assert warned == []
    training, warned = read_quietly(lambda s: stare_split(s, "training"), samples)
    assert len(training) == 13 and not {s.name for s in training} & set(STARE_TEST)
    assert len(warned) == 1 and "im0235, im0236" in warned[0] and "2 of its 15" in warned[0]


def test_missing_stare_test_image_is_not_replaced():
    samples = _stare_samples([n for n in STARE_LABELLED if n != "im0240"])
    with pytest.warns(DataWarning, match="test split: 1 of its 5 images are missing \\(im0240\\)"):
        test = stare_split(samples, "test")
    assert [s.name for s in test] == ["im0004", "im0081", "im0163", "im0324"]
    training = stare_split(samples, "training")
    assert "im0255" in [s.name for s in training] and len(training) == 15


def test_real_stare_split(tmp_path):
    root = os.environ.get("NUMPYSEG_STARE")
    if not root or not os.path.isdir(root):
        pytest.skip("STARE not available: set NUMPYSEG_STARE to the STARE folder")
    samples = load_stare(root)
    present = {s.name for s in samples}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        test = stare_split(samples, "test")
    assert [s.name for s in test] == [n for n in STARE_TEST if n in present]


def test_drive_splits_are_fixed_by_name(tmp_path):
    _fake_drive(tmp_path, "training", ["21_training", "22_training"])
    with pytest.warns(DataWarning, match="18 of its 20 images are missing \\(23_training"):
        samples = load_drive(tmp_path, "training")
    assert [s.name for s in samples] == ["21_training", "22_training"]
    assert len(DRIVE_SPLIT_NAMES["training"]) == len(DRIVE_SPLIT_NAMES["test"]) == 20
    _photo(tmp_path / "training" / "images" / "01_test.tif", rng=9)  # a test image trained on?
    with pytest.raises(DataError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        load_drive(tmp_path, "training")
    assert_one_line(error, "01_test.tif", "test split")


def test_chase_split_names():
    assert CHASE_SPLIT_NAMES["training"][0] == "Image_01L" and CHASE_SPLIT_NAMES["training"][-1] == "Image_10R"
    assert CHASE_SPLIT_NAMES["test"] == tuple(f"Image_{c}{e}" for c in range(11, 15) for e in "LR")


# ----------------------------------------------------------------------------- damaged checkpoints

class _Weights:
    """A stand-in model: save_checkpoint needs only state_dict()."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return dict(self.state)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_checkpoint_with_non_finite_weight_is_refused(tmp_path, bad):
    state = {"enc1.weight": np.ones((2, 3), np.float32), "enc2.weight": np.ones(4, np.float32),
             "enc3.weight": np.ones(2, np.float32), "steps": np.array(3)}
    state["enc2.weight"][1] = bad
    state["enc3.weight"][0] = np.nan
    path = save_checkpoint(tmp_path / "c.npz", _Weights(state), config={}, epoch=1)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_one_line(error, "c.npz", "'enc2.weight'", "1 NaN or infinite values of 4")
    state["enc2.weight"][1] = 0.0
    state["enc3.weight"][0] = 0.0
    path = save_checkpoint(tmp_path / "c.npz", _Weights(state), config={}, epoch=1)
    assert load_checkpoint(path).model_state["enc2.weight"][1] == 0.0  # finite: loads
