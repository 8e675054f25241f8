"""The FSS-1000 converter: pairing, shuffling, resizing, every kind of bad input, the CLI."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg.datasets import fss1000 as convert
from metaseg.data.shards import read_shard, read_shard_with_keys
from metaseg.errors import DataError
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_tools" / "fss_1000_image_to_tfrecord.py"
SIZE = 32
OPTIONS = convert.ConvertOptions(image_size=SIZE)


def _mask(k, size=SIZE):
    """A mask that identifies example k: a square whose corner moves with k."""
    mask = np.zeros((size, size), np.uint8)
    mask[2 + k:12 + k, 4 + 2 * k:14 + 2 * k] = 255
    return mask


def _colour(k):
    return 20 + 30 * k


def _write_pair(class_dir, k, size=SIZE, image=None, mask=None):
    """``<k>.jpg`` of flat colour ``_colour(k)`` and ``<k>.png`` = ``_mask(k)``."""
    class_dir.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.full((size, size, 3), _colour(k), np.uint8)
    Image.fromarray(image).save(class_dir / f"{k}.jpg", quality=95)
    Image.fromarray(_mask(k, size) if mask is None else mask).save(class_dir / f"{k}.png")


def _make_class(root, name, n):
    for k in range(n):
        _write_pair(root / name, k)
    return root / name


def _identify(images, masks):
    """For each stored example, which k it came from (by mask), checking its image agrees."""
    ks = []
    for image, mask in zip(images, masks):
        k = next(k for k in range(10) if np.array_equal(mask, _mask(k, mask.shape[0])))
        assert abs(float(image.mean()) - _colour(k)) < 2.0  # the jpg beside that png
        ks.append(k)
    return ks


def test_convert_class_pairs_and_shuffles(tmp_path):
    class_dir = _make_class(tmp_path / "in", "bus", 6)
    (tmp_path / "out").mkdir()
    report = convert.convert_class(str(class_dir), str(tmp_path / "out"), OPTIONS)
    assert (report.name, report.status, report.written, report.skipped) == ("bus", "written", 6, [])
    images, masks = read_shard(tmp_path / "out" / "bus.tfrecord.gzip")
    order = _identify(images, masks)
    assert sorted(order) == list(range(6)) and order != list(range(6))
    keys = read_shard_with_keys(tmp_path / "out" / "bus.tfrecord.gzip")[2]
    assert keys == [f"bus/{k}" for k in order]  # each record stores its <class>/<n> key
    # The shuffle is fixed by the seed: same seed, same order; another seed, another order.
    again = convert.convert_class(str(class_dir), str(tmp_path / "out"),
                                  convert.ConvertOptions(image_size=SIZE, overwrite=True))
    assert again.written == 6
    assert _identify(*read_shard(tmp_path / "out" / "bus.tfrecord.gzip")) == order
    convert.convert_class(str(class_dir), str(tmp_path / "out"),
                          convert.ConvertOptions(image_size=SIZE, overwrite=True, seed=1))
    assert _identify(*read_shard(tmp_path / "out/bus.tfrecord.gzip")) != order


def test_mask_is_the_first_png_channel(tmp_path):
    rgb_mask = np.stack([_mask(0), np.full((SIZE, SIZE), 77, np.uint8), _mask(1)], -1)
    _write_pair(tmp_path / "in" / "cat", 0, mask=rgb_mask)
    report = convert.convert_class(str(tmp_path / "in" / "cat"), str(tmp_path), OPTIONS)
    assert report.written == 1
    assert report.notes == [(str(tmp_path / "in" / "cat" / "0.png"),
                             "read the red channel of a colour mask")]
    np.testing.assert_array_equal(read_shard(tmp_path / "cat.tfrecord.gzip")[1][0], _mask(0))


def test_other_sizes_are_resized_unless_strict(tmp_path):
    class_dir = _make_class(tmp_path / "in", "bus", 2)
    _write_pair(class_dir, 2, size=2 * SIZE)
    report = convert.convert_class(str(class_dir), str(tmp_path), OPTIONS)
    assert (report.written, report.resized, report.skipped) == (3, 1, [])
    images, masks = read_shard(tmp_path / "bus.tfrecord.gzip")
    assert images.shape == (3, SIZE, SIZE, 3) and set(np.unique(masks)) == {0, 255}
    strict = convert.ConvertOptions(image_size=SIZE, strict_size=True, overwrite=True)
    report = convert.convert_class(str(class_dir), str(tmp_path), strict)
    assert (report.written, report.resized) == (2, 0)
    assert report.skipped == [(str(class_dir / "2.jpg"), "image is 64x64 px, not 32x32 "
                                                         "(--strict_size)")]


def _truncated_jpeg(class_dir):
    _write_pair(class_dir, 5, image=np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3),
                                                                       dtype=np.uint8))
    data = (class_dir / "5.jpg").read_bytes()
    (class_dir / "5.jpg").write_bytes(data[:len(data) // 2])
    return str(class_dir / "5.jpg"), "corrupt or truncated image: image file is truncated"


def _truncated_png(class_dir):
    noise = np.random.default_rng(0).integers(0, 2, (SIZE, SIZE), dtype=np.uint8) * 255
    _write_pair(class_dir, 5, mask=noise)
    data = (class_dir / "5.png").read_bytes()
    (class_dir / "5.png").write_bytes(data[:len(data) // 2])
    return str(class_dir / "5.png"), "corrupt or truncated image: image file is truncated"


def _not_an_image(class_dir):
    _write_pair(class_dir, 5)
    (class_dir / "5.png").write_text("<html>a download error page</html>")
    return str(class_dir / "5.png"), "corrupt or truncated image: cannot identify image file"


def _mask_without_image(class_dir):
    Image.fromarray(_mask(5)).save(class_dir / "5.png")
    return str(class_dir / "5.png"), "mask without image (no 5.jpg beside it)"


def _image_without_mask(class_dir):
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(class_dir / "5.jpg")
    return str(class_dir / "5.jpg"), "image without mask (no 5.png beside it)"


def _non_square(class_dir):
    _write_pair(class_dir, 5, image=np.zeros((24, SIZE, 3), np.uint8),
                mask=np.zeros((24, SIZE), np.uint8))
    return str(class_dir / "5.jpg"), "non-square image 32x24"


def _size_mismatch(class_dir):
    _write_pair(class_dir, 5, mask=np.zeros((16, 16), np.uint8))
    return str(class_dir / "5.png"), "mask is 16x16 but its image is 32x32"


@pytest.mark.parametrize("make_bad", [_truncated_jpeg, _truncated_png, _not_an_image,
                                      _mask_without_image, _image_without_mask, _non_square,
                                      _size_mismatch])
def test_bad_pairs_are_skipped_with_their_reason(tmp_path, make_bad):
    class_dir = _make_class(tmp_path / "in", "bus", 3)
    path, reason = make_bad(class_dir)
    report = convert.convert_class(str(class_dir), str(tmp_path / "in"), OPTIONS)
    assert report.skipped[0][0] == path
    assert report.skipped[0][1].startswith(reason), report.skipped
    assert len(report.skipped) == 1 and report.written == 3
    assert sorted(_identify(*read_shard(tmp_path / "in" / "bus.tfrecord.gzip"))) == [0, 1, 2]


def test_non_binary_masks_are_thresholded_and_counted(tmp_path):
    mask = _mask(0)
    mask[0, :5] = [1, 127, 128, 200, 254]  # 3 become 255, 2 become 0
    _write_pair(tmp_path / "in" / "cat", 0, mask=mask)
    report = convert.convert_class(str(tmp_path / "in" / "cat"), str(tmp_path), OPTIONS)
    assert report.notes == [(str(tmp_path / "in" / "cat" / "0.png"), "5 pixels with values "
                             "other than 0/255 thresholded at 128 (grey)")]
    stored = read_shard(tmp_path / "cat.tfrecord.gzip")[1][0]
    assert stored[0, :5].tolist() == [0, 0, 255, 255, 255]
    np.testing.assert_array_equal(stored[1:], _mask(0)[1:])
    text = convert.summarize([report], str(tmp_path), 1.0)
    assert "Read 1 masks that are not plain 0/255 (kept, as noted):" in text


def test_class_without_valid_pairs_writes_no_shard(tmp_path):
    empty = tmp_path / "in" / "empty"
    empty.mkdir(parents=True)
    report = convert.convert_class(str(empty), str(tmp_path), OPTIONS)
    assert report.status == "skipped" and report.skipped == [
        (str(empty), "no image/mask pairs in class folder; no shard written")]
    broken = tmp_path / "in" / "broken"
    _non_square(broken.mkdir() or broken)
    report = convert.convert_class(str(broken), str(tmp_path), OPTIONS)
    assert report.skipped[-1] == (str(broken), "no valid image/mask pair in class folder; "
                                               "no shard written")
    assert not [f for f in os.listdir(tmp_path) if f != "in"]  # no shard, no temporary file


def test_existing_shard_is_kept_without_overwrite(tmp_path):
    class_dir = _make_class(tmp_path / "in", "bus", 2)
    shard = tmp_path / "bus.tfrecord.gzip"
    shard.write_bytes(b"an earlier conversion")
    report = convert.convert_class(str(class_dir), str(tmp_path), OPTIONS)
    assert (report.status, report.written, report.skipped) == ("exists", 0, [])
    assert shard.read_bytes() == b"an earlier conversion"
    assert "Kept 1 existing shards (pass --overwrite to replace them): bus" in \
        convert.summarize([report], str(tmp_path), 1.0)
    forced = convert.ConvertOptions(image_size=SIZE, overwrite=True)
    assert convert.convert_class(str(class_dir), str(tmp_path), forced).written == 2
    assert len(read_shard(shard)[0]) == 2


def test_input_and_output_directory_errors(tmp_path):
    with pytest.raises(DataError) as error:
        convert.find_class_dirs(str(tmp_path / "nowhere"))
    assert str(error.value) == (f"input directory {tmp_path / 'nowhere'} does not exist; pass "
                                "--input_dir pointing at the FSS-1000 folder (<class>/<n>.jpg + "
                                "<n>.png)")
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        convert.find_class_dirs(str(tmp_path))
    assert str(error.value) == (f"input directory {tmp_path} holds no class folders; expected "
                                f"{tmp_path}/<class>/<n>.jpg + <n>.png")
    with pytest.raises(DataError, match="does not exist"):  # stops before touching the output
        convert.convert_dataset(str(tmp_path / "nowhere"), str(tmp_path / "o"), OPTIONS, 1)
    assert not (tmp_path / "o").exists()
    blocked = tmp_path / "loose.jpg" / "out"  # under a regular file: unwritable even as root
    with pytest.raises(DataError) as error:
        convert.prepare_output_dir(str(blocked))
    assert str(error.value) == (f"output directory {blocked} is not writable (Not a directory); "
                                "choose another --tfrecord_dir")
    _make_class(tmp_path / "in", "bus", 1)
    with pytest.raises(DataError, match="is not writable"):  # stops before any class
        convert.convert_dataset(str(tmp_path / "in"), str(blocked), OPTIONS, 1)


def test_parallel_conversion_matches_serial(tmp_path):
    for name, n in [("bus", 3), ("cat", 2), ("dog", 4)]:
        _make_class(tmp_path / "in", name, n)
    serial = convert.convert_dataset(str(tmp_path / "in"), str(tmp_path / "a"), OPTIONS, 1)
    parallel = convert.convert_dataset(str(tmp_path / "in"), str(tmp_path / "b"), OPTIONS, 2)
    assert [(r.name, r.written) for r in parallel] == [("bus", 3), ("cat", 2), ("dog", 4)]
    assert [(r.name, r.written) for r in serial] == [("bus", 3), ("cat", 2), ("dog", 4)]
    for name in ("bus", "cat", "dog"):
        shard = f"{name}.tfrecord.gzip"
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=time_limit(120))


def test_script_lists_skips_and_exits_2(tmp_path):
    _make_class(tmp_path / "in", "bus", 3)
    cat = _make_class(tmp_path / "in", "cat", 2)
    _mask_without_image(cat)
    (tmp_path / "in" / "empty").mkdir()
    args = ["--input_dir", str(tmp_path / "in"), "--tfrecord_dir", str(tmp_path / "out"),
            "--image_size", str(SIZE), "--num_workers", "1"]
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 2 files were skipped (listed above); fix them or pass --allow_skips")
    assert "Traceback" not in result.stderr
    assert "Wrote 2 shards (5 examples) to" in result.stdout
    assert f"  {cat / '5.png'}: mask without image (no 5.jpg beside it)" in result.stdout
    assert f"  {tmp_path / 'in' / 'empty'}: no image/mask pairs in class folder" in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["bus.tfrecord.gzip", "cat.tfrecord.gzip"]
    assert len(read_shard(tmp_path / "out" / "cat.tfrecord.gzip")[0]) == 2


def test_allow_skips_and_resume(tmp_path):
    _make_class(tmp_path / "in", "bus", 2)
    _mask_without_image(_make_class(tmp_path / "in", "cat", 1))
    reports = convert.convert_dataset(str(tmp_path / "in"), str(tmp_path / "out"), OPTIONS, 1)
    with pytest.raises(DataError) as error:
        convert.check_skips(reports, allow_skips=False)
    assert str(error.value) == ("1 files were skipped (listed above); fix them or pass "
                                "--allow_skips")
    convert.check_skips(reports, allow_skips=True)  # no error
    again = convert.convert_dataset(str(tmp_path / "in"), str(tmp_path / "out"), OPTIONS, 1)
    assert [(r.status, r.skipped) for r in again] == [("exists", []), ("exists", [])]
    convert.check_skips(again, allow_skips=False)  # kept shards are not skips
