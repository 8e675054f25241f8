"""``metaseg adapt`` reads support masks and photos as the converter does (``image_io``):
0/1 label maps and alpha-only masks keep their object (with a warning naming the file),
phone photos are turned upright by their EXIF orientation."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg.cli import folders
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.cli.test_metaseg_cli import SIZE, save_initialisation, scene, write_queries
from tests.conftest import time_limit
from tests.data.test_masks import save_exif_rotated


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    return save_initialisation(tmp_path_factory.mktemp("support_masks_init") / "init")


def write_awkward_support(directory):
    """a: 0/1 label map; b: object only in the alpha channel; c: a photo stored sideways
    with EXIF orientation 6 (80x60 as shown, 60x80 as stored), its mask drawn upright.
    Returns {stem: (upright image, mask as bool)}."""
    directory.mkdir(parents=True)
    truth = {}
    for seed, stem in enumerate("abc"):
        image, mask = scene(seed, 80, 60)
        image[:10, :10] = 255  # a bright top-left corner: any turn shows
        truth[stem] = (image, mask == 255)
        if stem == "c":
            save_exif_rotated(image, directory / "c.jpg")
        else:
            Image.fromarray(image).save(directory / f"{stem}.jpg", quality=95)
    Image.fromarray((truth["a"][1]).astype(np.uint8)).save(directory / "a.png")
    alpha_only = np.zeros((60, 80, 4), np.uint8)
    alpha_only[..., 3] = truth["b"][1] * 255
    Image.fromarray(alpha_only).save(directory / "b.png")
    Image.fromarray(truth["c"][1].astype(np.uint8) * 255).save(directory / "c.png")
    return truth


def test_folder_reader_keeps_objects_and_turns_photos_upright(tmp_path):
    truth = write_awkward_support(tmp_path / "support")
    pairs = folders.support_pairs(str(tmp_path / "support"))
    images, masks = folders.read_support(pairs, 64)
    for i, stem in enumerate("abc"):
        expected_image, expected_mask = truth[stem]
        reference_dir = tmp_path / f"ref_{stem}"
        reference_dir.mkdir()
        Image.fromarray(expected_image).save(reference_dir / "x.jpg", quality=95)
        Image.fromarray(expected_mask.astype(np.uint8) * 255).save(reference_dir / "x.png")
        ref_images, ref_masks = folders.read_support(folders.support_pairs(str(reference_dir)),
                                                     64)
        np.testing.assert_array_equal(masks[i], ref_masks[0])
        assert masks[i][..., 1].sum() > 100  # the object is there
        assert np.abs(images[i] - ref_images[0]).mean() < 4, stem  # upright, same photo


def test_exif_is_not_applied_when_the_mask_fits_only_the_stored_pixels(tmp_path):
    support = tmp_path / "support"
    support.mkdir()
    image, mask = scene(0, 80, 60)
    save_exif_rotated(image, support / "x.jpg")
    stored_mask = np.rot90(mask)  # drawn on the stored (sideways) pixels: 60x80
    Image.fromarray(np.ascontiguousarray(stored_mask)).save(support / "x.png")
    assert folders.decode_image(str(support / "x.jpg"), (60, 80)).shape == (80, 60, 3)
    images, masks = folders.read_support(folders.support_pairs(str(support)), 64)
    assert masks[0][..., 1].sum() > 100


def test_adapt_command_accepts_label_map_and_alpha_masks_naming_them(init, tmp_path):
    write_awkward_support(tmp_path / "support")
    query = write_queries(tmp_path / "query")
    result = subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", str(init), "--support",
         str(tmp_path / "support"), "--query", str(query), "--output", str(tmp_path / "out"),
         "--image_size", str(SIZE), "--steps", "1"],
        capture_output=True, text=True, env=subprocess_env(), timeout=time_limit(300),
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = own_stderr_lines(result.stderr)
    support = tmp_path / "support"
    assert any(f"Support mask {support / 'a.png'}: 0/1 label map" in line for line in lines)
    assert any(f"Support mask {support / 'b.png'}: object read from the alpha channel" in line
               for line in lines)
    assert not any("empty" in line for line in lines), lines
    assert (tmp_path / "out" / "masks" / "q1.png").exists()
