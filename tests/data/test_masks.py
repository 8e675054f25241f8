"""One reading of mask files for every tool (``image_io.read_mask``) and upright images
(EXIF orientation), through the function and through the FSS-1000 converter's command line."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg.datasets import fss1000 as convert
from metaseg.data import image_io
from metaseg.data.shards import read_shard_with_keys
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_tools" / "fss_1000_image_to_tfrecord.py"
SIZE = 32
ORIENTATION = 0x0112


def object_mask(k=0, size=SIZE):
    """bool [size, size]: a rectangle whose place depends on k."""
    mask = np.zeros((size, size), bool)
    mask[3 + k:15 + k, 5:20 + k] = True
    return mask


def save_exif_rotated(upright: np.ndarray, path):
    """Save ``upright`` as a JPEG whose stored pixels are turned 90 degrees, with the EXIF
    orientation (6) that tells viewers to turn it back, as a phone camera does."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:  # the file really is stored sideways
        assert im.size == stored.size and im.getexif()[ORIENTATION] == 6


def half_bright(height, width):
    """uint8 [H, W, 3]: top-left quarter bright, the rest dark, so any turn shows."""
    image = np.full((height, width, 3), 30, np.uint8)
    image[:height // 2, :width // 2] = 220
    return image


# --- the rules, one file kind at a time -----------------------------------------------------

def _grey(values):
    return Image.fromarray(values.astype(np.uint8))


def _palette(colour):
    im = Image.fromarray(object_mask().astype(np.uint8), "P")
    im.putpalette([0, 0, 0, *colour] + [0] * 762)
    return im


def _rgba(colour_of_object, alpha_of_object, alpha_elsewhere):
    pixels = np.zeros((SIZE, SIZE, 4), np.uint8)
    pixels[object_mask()] = (*colour_of_object, alpha_of_object)
    pixels[~object_mask(), 3] = alpha_elsewhere
    return Image.fromarray(pixels)


ACCEPTED = {  # file -> the note read_mask gives (None: plain 0/255)
    "0/255 grey": (_grey(object_mask() * 255), None),
    "1-bit": (Image.fromarray(object_mask()), None),
    "0/1 label map": (_grey(object_mask()), "0/1 label map (grey): 1 read as foreground"),
    "anti-aliased": (_grey(np.where(object_mask(), 250, 3)),
                     f"{SIZE * SIZE} pixels with values other than 0/255 thresholded at 128 "
                     "(grey)"),
    "black/white palette": (_palette((255, 255, 255)), None),
    "VOC-style palette (class 1 dark red)": (
        _palette((128, 0, 0)), f"{object_mask().sum()} pixels with values other than 0/255 "
                               "thresholded at 128 (red channel of a colour mask)"),
    "alpha-only (black paint, object opaque)": (
        _rgba((0, 0, 0), 255, 0), "object read from the alpha channel (the colour channels "
                                  "are constant)"),
    "white on transparent black": (_rgba((255, 255, 255), 255, 0), None),
    "opaque RGBA": (_rgba((255, 255, 255), 255, 255), None),
}

REFUSED = {  # file -> words of the refusal
    "label map of two classes (0/1/2)": (_grey(object_mask() * 2 + (np.arange(SIZE) < 2)),
                                         "non-zero values: 1, 2"),
    "green object on black": (Image.fromarray(np.stack(
        [np.zeros((SIZE, SIZE)), object_mask() * 255, np.zeros((SIZE, SIZE))],
        -1).astype(np.uint8)), "the object is in another channel"),
    "VOC palette class 2 (dark green)": (_palette((0, 128, 0)),
                                         "the object is in another channel"),
    "alpha and colour disagree": (Image.fromarray(np.dstack(
        [np.tile(object_mask()[:, ::-1, None] * 255, 3), object_mask() * 255]
    ).astype(np.uint8)), "alpha channel and its colours mark different objects"),
    "16-bit levels": (Image.fromarray((object_mask() * 1000).astype(np.uint16)),
                      "not an 8-bit mask"),
}


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_accepted_masks_keep_their_object(kind, tmp_path):
    image, note = ACCEPTED[kind]
    path = str(tmp_path / "m.png")
    image.save(path)
    mask, got = image_io.read_mask(path)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, object_mask())
    assert got == note


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_ambiguous_masks_are_refused_naming_the_file(kind, tmp_path):
    image, words = REFUSED[kind]
    path = str(tmp_path / "m.png")
    image.save(path)
    with pytest.raises(image_io.InvalidMask) as error:
        image_io.read_mask(path)
    assert str(error.value).startswith(path + ": ") and words in str(error.value)


def test_mask_with_exif_orientation_is_read_upright(tmp_path):
    path = str(tmp_path / "m.png")
    stored = Image.fromarray((object_mask() * 255).astype(np.uint8)).transpose(
        Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(path, exif=exif.tobytes())
    np.testing.assert_array_equal(image_io.read_mask(path)[0] == 255, object_mask())


def test_exif_is_applied_unless_only_the_stored_pixels_fit_the_annotation(tmp_path):
    upright = half_bright(30, 50)  # 50 wide, 30 high
    path = str(tmp_path / "photo.jpg")
    save_exif_rotated(upright, path)
    read = np.asarray(image_io.open_image(path))
    assert read.shape == (30, 50, 3) and np.abs(read.astype(int) - upright).mean() < 4
    # annotated at the upright size: upright; at the stored size only: the stored pixels
    assert np.asarray(image_io.open_image(path, (50, 30))).shape == (30, 50, 3)
    assert np.asarray(image_io.open_image(path, (30, 50))).shape == (50, 30, 3)
    square = np.asarray(image_io.load_square_rgb(path, 16))
    assert square[:4, :4].mean() > 150 and square[-4:, -4:].mean() < 80  # bright corner kept


def test_converter_skips_a_mask_whose_object_vanishes_when_resized(tmp_path):
    class_dir = tmp_path / "dot"
    class_dir.mkdir()
    mask = np.zeros((4 * SIZE, 4 * SIZE), np.uint8)
    mask[1, 1] = 255  # one pixel: nearest neighbour to a quarter of the size drops it
    Image.fromarray(half_bright(4 * SIZE, 4 * SIZE)).save(class_dir / "1.jpg")
    Image.fromarray(mask).save(class_dir / "1.png")
    with pytest.raises(convert.SkipPair) as error:
        convert.load_pair(str(class_dir / "1.jpg"), str(class_dir / "1.png"),
                          convert.ConvertOptions(image_size=SIZE))
    assert error.value.args[0] == str(class_dir / "1.png")
    assert "vanishes when resized to 32x32" in error.value.args[1]


# --- the converter's command line ---------------------------------------------------------

def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=time_limit(180))


def test_converter_command_line_keeps_every_object_and_turns_photos_upright(tmp_path):
    root = tmp_path / "fss"
    for name in ("labels01", "alpha", "exif", "multi"):
        (root / name).mkdir(parents=True)
    for k in range(2):
        image = half_bright(SIZE, SIZE)
        Image.fromarray(image).save(root / "labels01" / f"{k}.jpg", quality=95)
        _grey(object_mask(k)).save(root / "labels01" / f"{k}.png")  # 0/1
        Image.fromarray(image).save(root / "alpha" / f"{k}.jpg", quality=95)
        alpha_only = np.zeros((SIZE, SIZE, 4), np.uint8)
        alpha_only[..., 3] = object_mask(k) * 255
        Image.fromarray(alpha_only).save(root / "alpha" / f"{k}.png")
        save_exif_rotated(image, root / "exif" / f"{k}.jpg")
        _grey(object_mask(k) * 255).save(root / "exif" / f"{k}.png")
    Image.fromarray(half_bright(SIZE, SIZE)).save(root / "multi" / "0.jpg")
    _grey(object_mask() * 2 + (np.arange(SIZE) < 2)).save(root / "multi" / "0.png")
    out = tmp_path / "shards"
    result = _run("--input_dir", str(root), "--tfrecord_dir", str(out),
                  "--image_size", str(SIZE), "--num_workers", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 2 files were skipped (listed above); fix them or pass --allow_skips")
    assert f"  {root / 'multi' / '0.png'}: no grey value is >= 128" in result.stdout
    assert f"  {root / 'labels01' / '0.png'}: 0/1 label map (grey): 1 read as foreground" \
        in result.stdout
    assert f"  {root / 'alpha' / '1.png'}: object read from the alpha channel" in result.stdout
    assert sorted(os.listdir(out)) == [f"{n}.tfrecord.gzip" for n in ("alpha", "exif",
                                                                      "labels01")]
    for name in ("labels01", "alpha", "exif"):
        images, masks, keys = read_shard_with_keys(out / f"{name}.tfrecord.gzip")
        for image, mask, key in zip(images, masks, keys):
            k = int(key.split("/")[1])
            np.testing.assert_array_equal(mask == 255, object_mask(k))
            # upright: the bright quarter is top-left, as the photo is shown
            assert image[:8, :8].mean() > 150 and image[-8:, -8:].mean() < 80, name
