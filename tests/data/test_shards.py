"""The shard format: byte-exact round trip, original-writer compatibility, resizing, errors."""
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from metaseg.data import shards
from metaseg.data.shards import (SHARD_SUFFIX, load_task, mask_to_two_channel, read_shard,
                                 resize_examples, serialize_example, write_shard)
from metaseg.errors import DataError


def _raw_records(path):
    """Every record of a GZIP TFRecord file as Python bytes, via tf.data only."""
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


def _original_write(path, images, masks):
    """Write a shard the way the TF1 converter did: hand-built Example, GZIP TFRecordWriter."""
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(path), options=options) as writer:
        for image, mask in zip(images, masks):
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mask.tobytes()])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def _write_records(path, records):
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for record in records:
            w.write(record)


def _example(image_bytes, mask_bytes):
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
               "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mask_bytes]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_feature_spec_and_suffix():
    assert SHARD_SUFFIX == ".tfrecord.gzip"
    assert set(shards.FEATURE_SPEC) == {"image", "mask"}
    for spec in shards.FEATURE_SPEC.values():
        assert spec.dtype == tf.string and list(spec.shape) == []


def test_round_trip_is_byte_exact(tmp_path, make_pairs):
    images, masks = make_pairs(5, 32, seed=1)
    path = tmp_path / ("bus" + SHARD_SUFFIX)
    assert write_shard(path, zip(images, masks)) == 5
    records = _raw_records(path)
    assert len(records) == 5
    for record, image, mask in zip(records, images, masks):
        features = tf.train.Example.FromString(record).features.feature
        assert set(features) == {"image", "mask"}
        assert features["image"].bytes_list.value == [image.tobytes()]
        assert features["mask"].bytes_list.value == [mask.tobytes()]
        assert len(features["image"].bytes_list.value[0]) == 32 * 32 * 3
    # The file really is GZIP: the standard library can inflate it.
    assert gzip.decompress(path.read_bytes())
    assert serialize_example(images[0], masks[0]) == records[0]


def test_shard_of_the_original_writer_loads_unchanged(tmp_path, make_pairs):
    images, masks = make_pairs(4, 32, seed=2, kind=1)
    path = tmp_path / ("hotel_slipper" + SHARD_SUFFIX)
    _original_write(path, images, masks)
    read_images, read_masks = read_shard(path)
    assert read_images.dtype == np.uint8 and read_images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_masks, masks)
    task_images, task_masks = load_task(str(path))
    assert task_images.dtype == tf.float32 and task_masks.dtype == tf.float32
    np.testing.assert_array_equal(task_images.numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(task_masks.numpy()[..., 1], (masks == 255).astype(np.float32))


def test_load_task_values(tmp_path, make_pairs):
    images, masks = make_pairs(3, 32, seed=3)
    path = tmp_path / ("a" + SHARD_SUFFIX)
    write_shard(path, zip(images, masks))
    task_images, task_masks = load_task(path)
    assert task_images.shape == (3, 32, 32, 3) and task_masks.shape == (3, 32, 32, 2)
    np.testing.assert_array_equal(task_images.numpy(), images.astype(np.float32))
    target = task_masks.numpy()
    np.testing.assert_allclose(target.sum(-1), 1.0)
    assert np.all(target[masks == 255] == [0.0, 1.0])
    assert np.all(target[masks == 0] == [1.0, 0.0])


def test_mask_to_two_channel_partial_values():
    out = mask_to_two_channel(np.array([[0, 255, 128]], np.uint8)).numpy()
    assert out.shape == (1, 3, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [[1, 0], [0, 1], [127 / 255, 128 / 255]], rtol=1e-6)


def test_load_task_concatenates_and_resizes_several_shards(tmp_path, make_pairs):
    a_images, a_masks = make_pairs(3, 32, seed=4)
    b_images, b_masks = make_pairs(2, 64, seed=5)
    write_shard(tmp_path / "a.tfrecord.gzip", zip(a_images, a_masks))
    write_shard(tmp_path / "b.tfrecord.gzip", zip(b_images, b_masks))
    paths = [tmp_path / "a.tfrecord.gzip", tmp_path / "b.tfrecord.gzip"]
    with pytest.raises(DataError, match=r"store different image sizes \[32, 64\]"):
        load_task(paths)
    images, masks = load_task(paths, image_size=32)
    assert images.shape == (5, 32, 32, 3) and masks.shape == (5, 32, 32, 2)
    np.testing.assert_array_equal(images.numpy()[:3], a_images.astype(np.float32))
    assert set(np.unique(masks.numpy())) == {0.0, 1.0}


def test_size_is_inferred_and_resized_with_binary_masks(tmp_path, make_pairs):
    images, masks = make_pairs(4, 64, seed=6, kind=2)
    path = tmp_path / ("big" + SHARD_SUFFIX)
    write_shard(path, zip(images, masks))
    assert read_shard(path)[0].shape == (4, 64, 64, 3)
    small_images, small_masks = load_task(path, image_size=32)
    assert small_images.shape == (4, 32, 32, 3) and small_masks.shape == (4, 32, 32, 2)
    assert set(np.unique(small_masks.numpy())) == {0.0, 1.0}  # nearest keeps masks binary
    # The object keeps its share of the image (to within a few boundary pixels).
    np.testing.assert_allclose(small_masks.numpy()[..., 1].mean((1, 2)),
                               (masks == 255).mean((1, 2)), atol=0.04)


def test_resize_examples_properties():
    flat = np.full((2, 64, 64, 3), 173, np.uint8)
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))[None]
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, 16:48, 16:48] = 255
    images, small_masks = resize_examples(np.concatenate([flat[:1], ramp]), masks, 32)
    assert images.dtype == np.uint8 and images.shape == (2, 32, 32, 3)
    assert np.all(images[0] == 173)  # a flat image stays exactly flat
    row = images[1, 5, :, 0].astype(int)
    assert np.all(np.diff(row) > 0) and row[0] < 8 and row[-1] > 244  # a ramp stays a ramp
    expected = np.zeros((32, 32), np.uint8)
    expected[8:24, 8:24] = 255
    np.testing.assert_array_equal(small_masks[0], expected)
    same_images, same_masks = resize_examples(flat, masks, 64)
    assert same_images is flat and same_masks is masks


def test_write_shard_refuses_existing_file_unless_overwrite(tmp_path, make_pairs):
    images, masks = make_pairs(2, 32, seed=7)
    path = tmp_path / ("a" + SHARD_SUFFIX)
    write_shard(path, zip(images, masks))
    before = path.read_bytes()
    with pytest.raises(DataError) as error:
        write_shard(path, zip(images[:1], masks[:1]))
    assert str(error.value) == f"{path} already exists; pass --overwrite to replace it"
    assert path.read_bytes() == before
    assert write_shard(path, zip(images[:1], masks[:1]), overwrite=True) == 1
    assert len(read_shard(path)[0]) == 1


def _pairs_then_fail(images, masks, n):
    for i in range(n):
        yield images[i], masks[i]
    raise RuntimeError("disk on fire")


@pytest.mark.parametrize("case", ["exception", "non_square", "mixed_sizes", "empty"])
def test_write_shard_leaves_nothing_on_failure(tmp_path, make_pairs, case):
    images, masks = make_pairs(3, 32, seed=8)
    other_images, other_masks = make_pairs(1, 16, seed=8)
    pairs, error, message = {
        "exception": (_pairs_then_fail(images, masks, 2), RuntimeError, "disk on fire"),
        "non_square": ([(images[0][:, :20], masks[0][:, :20])], DataError,
                       r"image must be a square RGB array \[S, S, 3\], got shape \(32, 20, 3\)"),
        "mixed_sizes": ([(images[0], masks[0]), (other_images[0], other_masks[0])], DataError,
                        "all images of a shard must have one size"),
        "empty": ([], DataError, "no examples to write"),
    }[case]
    path = tmp_path / ("a" + SHARD_SUFFIX)
    with pytest.raises(error, match=message):
        write_shard(path, pairs)
    assert os.listdir(tmp_path) == []  # neither the shard nor its temporary file


def test_serialize_example_validates():
    with pytest.raises(DataError, match="must be uint8, got float32 and uint8"):
        serialize_example(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"mask shape \(4, 5\) does not match image shape"):
        serialize_example(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))


def _gzip_tfrecord_with_bad_crc(path, make_pairs):
    """A valid GZIP stream holding a TFRecord whose payload no longer matches its CRC."""
    images, masks = make_pairs(2, 8, seed=9)
    plain = path.with_suffix(".plain")
    with tf.io.TFRecordWriter(str(plain)) as writer:
        for image, mask in zip(images, masks):
            writer.write(_example(image.tobytes(), mask.tobytes()))
    data = bytearray(plain.read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload
    path.write_bytes(gzip.compress(bytes(data)))


@pytest.mark.parametrize("case,message", [
    ("truncated", "shard is truncated or corrupt (truncated record at "),
    ("bad_crc", "shard is truncated or corrupt (corrupted record"),
    ("not_gzip", "shard is truncated or corrupt (inflate() failed"),
])
def test_read_shard_rejects_corrupt_files(tmp_path, make_pairs, case, message):
    path = tmp_path / (case + SHARD_SUFFIX)
    if case == "bad_crc":
        _gzip_tfrecord_with_bad_crc(path, make_pairs)
    elif case == "truncated":
        images, masks = make_pairs(3, 32, seed=10)
        write_shard(path, zip(images, masks))
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_bytes(b"this is not a gzip file at all")
    with pytest.raises(DataError) as error:
        read_shard(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {message}"), text
    assert text.endswith("; re-download or re-convert it") and "\n" not in text


def test_read_shard_rejects_malformed_records(tmp_path):
    cases = {
        "not_square": ([_example(bytes(100), bytes(10))],
                       "image byte length 100 fits no square uint8 RGB image (expected 3*S*S); "
                       "this is not a shard of the original format"),
        "bad_mask": ([_example(bytes(3 * 16), bytes(5))],
                     "mask byte length [5] does not match 4x4 images (expected 16)"),
        "mixed": ([_example(bytes(3 * 16), bytes(16)), _example(bytes(3 * 64), bytes(64))],
                  "images of different sizes in one shard (byte lengths [48, 192]); re-convert it"),
        "empty": ([], "shard holds no examples; re-convert it or remove it"),
    }
    for name, (records, message) in cases.items():
        path = tmp_path / (name + SHARD_SUFFIX)
        _write_records(path, records)
        with pytest.raises(DataError) as error:
            read_shard(path)
        assert str(error.value) == f"{path}: {message}"


def test_read_shard_rejects_missing_and_foreign_files(tmp_path):
    missing = tmp_path / ("missing" + SHARD_SUFFIX)
    with pytest.raises(DataError) as error:
        read_shard(missing)
    assert str(error.value) == f"{missing}: shard not found"
    rng = np.random.default_rng(0)
    for name, record in [("foreign", b"\x01\x02 not a protobuf"),
                         ("noise", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()),
                         ("no_mask", tf.train.Example().SerializeToString())]:
        path = tmp_path / (name + SHARD_SUFFIX)
        _write_records(path, [record])
        with pytest.raises(DataError) as error:
            read_shard(path)
        assert str(error.value).startswith(
            f"{path}: records are not tf.train.Examples with bytes features 'image' and 'mask' (")


def test_read_shards_matches_read_shard_and_names_a_bad_file(tmp_path, make_pairs):
    paths = []
    for k, (n, size) in enumerate([(3, 32), (2, 16), (4, 32)]):
        images, masks = make_pairs(n, size, seed=20 + k, kind=k)
        paths.append(tmp_path / f"c{k}{SHARD_SUFFIX}")
        write_shard(paths[-1], zip(images, masks))
    for (images, masks), path in zip(shards.read_shards(paths), paths):
        expected_images, expected_masks = read_shard(path)
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(masks, expected_masks)
    bad = tmp_path / f"bad{SHARD_SUFFIX}"
    bad.write_bytes(paths[2].read_bytes()[:-100])
    with pytest.raises(DataError, match=f"^{bad}: shard is truncated or corrupt"):
        shards.read_shards([paths[0], bad, paths[1]])
    empty = tmp_path / f"empty{SHARD_SUFFIX}"
    _write_records(empty, [])
    with pytest.raises(DataError, match=f"^{empty}: shard holds no examples"):
        shards.read_shards([paths[0], empty])


# --- optional image keys (--train_list) ----------------------------------------------

def test_key_is_optional_and_plain_records_unchanged(make_pairs):
    images, masks = make_pairs(1, 8, seed=0)
    plain = shards.serialize_example(images[0], masks[0])
    assert plain == shards.serialize_example(images[0], masks[0], key=None)
    keyed = tf.train.Example.FromString(
        shards.serialize_example(images[0], masks[0], key="abacus/1"))
    assert keyed.features.feature["key"].bytes_list.value == [b"abacus/1"]
    assert set(tf.train.Example.FromString(plain).features.feature) == {"image", "mask"}
    with pytest.raises(DataError, match="non-empty"):
        shards.serialize_example(images[0], masks[0], key="")


def test_keys_read_back_and_plain_shards_have_none(tmp_path, make_pairs):
    images, masks = make_pairs(3, 8, seed=1)
    keyed, plain = str(tmp_path / "a.tfrecord.gzip"), str(tmp_path / "b.tfrecord.gzip")
    shards.write_shard(keyed, [(i, m, f"a/{n}") for n, (i, m) in enumerate(zip(images, masks))])
    shards.write_shard(plain, zip(images, masks))
    got_images, got_masks, keys = shards.read_shard_with_keys(keyed)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_masks, masks)
    assert keys == ["a/0", "a/1", "a/2"]
    assert shards.read_shard_with_keys(plain)[2] is None
    np.testing.assert_array_equal(shards.read_shard(keyed)[0], images)  # pairs as before
    both = shards.read_shards([keyed, plain], with_keys=True)
    assert both[0][2] == keys and both[1][2] is None
    assert [len(t) for t in shards.read_shards([keyed, plain])] == [2, 2]
