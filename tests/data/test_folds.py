"""PASCAL-5i: fold classes, a fake VOC layout to fold shards, ignore handling, bad input."""
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from data_tools import pascal5i_to_tfrecord as pascal
from metaseg.datasets import folds
from metaseg.data.shards import SHARD_SUFFIX, read_shard, read_shard_with_keys
from metaseg.data.tasks import list_tasks, make_splits, read_class_list
from metaseg.errors import ConfigError, DataError

SIZE = 32
# image id -> (class index of the top-left block, class index of the bottom-right block)
IMAGES = {"2007_000001": (1, 6), "2007_000002": (1, 15), "2008_000003": (6, 0),
          "2008_000004": (2, 15), "2009_000005": (1, 2), "2009_000006": (6, 15)}
VAL = ["2008_000003", "2009_000005", "2009_000006"]


def label_map(top: int, bottom: int) -> np.ndarray:
    """uint8 [64, 64]: class ``top`` in rows/cols 8-31, ``bottom`` in 40-63, a 255 border
    (4 px) around each block, background elsewhere. Blocks are aligned to 8 px, so a 2x
    nearest downscale to 32 px keeps them exact."""
    labels = np.zeros((64, 64), np.uint8)
    for value, (a, b) in ((top, (8, 32)), (bottom, (40, 64))):
        if value:
            labels[a - 4:b, a - 4:b] = 255
            labels[a:b, a:b] = value
    return labels


def expected_mask(image_id: str, class_index: int) -> np.ndarray:
    """The 32 px binary mask: the class's block downscaled; ignore (255) -> background."""
    small = label_map(*IMAGES[image_id])[1::2, 1::2]  # what PIL's 2x nearest picks
    return np.where(small == class_index, 255, 0).astype(np.uint8)


def colour(image_id: str) -> int:
    return 10 * (sorted(IMAGES).index(image_id) + 1)


def make_voc(root: pathlib.Path, with_labels: bool = True) -> pathlib.Path:
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    if with_labels:
        (voc / "SegmentationClassAug").mkdir()
    for image_id, (top, bottom) in IMAGES.items():
        Image.new("RGB", (80, 60), (colour(image_id),) * 3).save(
            voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        if with_labels:
            Image.fromarray(label_map(top, bottom)).save(
                voc / "SegmentationClassAug" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VAL) + "\n")
    return voc


def _ids_by_colour(images):
    by_colour = {colour(i): i for i in IMAGES}
    return [by_colour[int(round(float(im.mean()) / 10) * 10)] for im in images]


def test_fold_classes():
    assert folds.pascal5i_test_classes(0) == ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    assert folds.pascal5i_test_classes(3) == ["pottedplant", "sheep", "sofa", "train",
                                              "tvmonitor"]
    assert folds.coco20i_test_indices(1)[:3] == [2, 6, 10]
    assert folds.coco20i_test_indices(1, "contiguous") == list(range(21, 41))
    assert sorted(sum((folds.coco20i_test_indices(f) for f in range(4)), [])) == \
        list(range(1, 81))
    with pytest.raises(ConfigError):
        folds.pascal5i_test_classes(4)


def test_binary_mask_turns_ignore_into_background():
    labels = np.array([[0, 1, 255], [1, 2, 255]], np.uint8)
    np.testing.assert_array_equal(folds.binary_mask(labels, 1), [[0, 255, 0], [255, 0, 0]])
    assert folds.classes_present(labels, 20) == [1, 2]
    assert folds.classes_present(labels, 20, min_pixels=2) == [1]


def test_fake_voc_to_fold_shards(tmp_path):
    voc = make_voc(tmp_path)
    out = tmp_path / "pascal5i"
    result = pascal.convert(str(voc), str(out), image_size=SIZE, num_workers=2)
    assert result["train"] == {"aeroplane": 2, "bicycle": 1, "bus": 1, "person": 2}
    assert result["val"] == {"aeroplane": 1, "bicycle": 1, "bus": 2, "person": 1}
    for split, counts in (("train", result["train"]), ("val", result["val"])):
        for name, count in counts.items():
            images, masks = read_shard(out / split / (name + SHARD_SUFFIX))
            assert images.shape == (count, SIZE, SIZE, 3)
            index = folds.PASCAL_CLASSES.index(name) + 1
            keys = read_shard_with_keys(out / split / (name + SHARD_SUFFIX))[2]
            assert keys == _ids_by_colour(images)  # each record stores its image key
            for image_id, mask in zip(_ids_by_colour(images), masks):
                assert (image_id in VAL) == (split == "val")
                np.testing.assert_array_equal(mask, expected_mask(image_id, index))
    # Fold 0 tests aeroplane and bicycle on val images, trains bus/person on train images.
    fold0 = out / "fold0"
    assert read_class_list(fold0 / "test_classes.txt") == folds.pascal5i_test_classes(0)
    assert os.path.realpath(fold0 / "aeroplane.tfrecord.gzip") == \
        os.path.realpath(out / "val" / "aeroplane.tfrecord.gzip")
    assert os.path.realpath(fold0 / "bus.tfrecord.gzip") == \
        os.path.realpath(out / "train" / "bus.tfrecord.gzip")
    assert "fold0/bird (val)" in result["missing"]
    # The reader takes a fold folder with its class list (present classes only here).
    tasks = list_tasks(fold0)
    assert [t.name for t in tasks] == ["aeroplane", "bicycle", "bus", "person"]
    splits = make_splits(tasks, test_classes=["aeroplane", "bicycle"])
    assert [t.name for t in splits.train] == ["bus", "person"]


def test_image_list_restricts_training_images_only(tmp_path):
    voc = make_voc(tmp_path)
    listed = tmp_path / "train_fraction.txt"
    listed.write_text("JPEGImages/2007_000001.jpg SegmentationClassAug/2007_000001.png\n")
    result = pascal.convert(str(voc), str(tmp_path / "out"), image_size=SIZE,
                            image_list=str(listed))
    assert result["train"] == {"aeroplane": 1, "bus": 1}
    assert result["val"] == {"aeroplane": 1, "bicycle": 1, "bus": 2, "person": 1}


def test_min_foreground_pixels(tmp_path):
    voc = make_voc(tmp_path)
    result = pascal.convert(str(voc), str(tmp_path / "out"), image_size=SIZE,
                            min_foreground_pixels=24 * 24 + 1)  # every block has 24 x 24
    assert result["train"] == {} and result["val"] == {}


def test_bad_voc_layouts(tmp_path):
    voc = make_voc(tmp_path / "a", with_labels=False)
    with pytest.raises(DataError, match="no SegmentationClassAug/ folder: download "
                                        "SegmentationClassAug"):
        pascal.convert(str(voc), str(tmp_path / "out"))
    with pytest.raises(DataError, match="does not exist"):
        pascal.convert(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    voc = make_voc(tmp_path / "b")
    os.remove(voc / "ImageSets" / "Segmentation" / "val.txt")
    with pytest.raises(DataError, match="validation list .* not found; pass --val_list"):
        pascal.convert(str(voc), str(tmp_path / "out"))
    other = tmp_path / "other_val.txt"
    other.write_text("2012_999999\n")
    with pytest.raises(DataError, match="none of the images in validation list"):
        pascal.convert(str(voc), str(tmp_path / "out"), val_list=str(other))
    os.remove(voc / "JPEGImages" / "2007_000001.jpg")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VAL))
    with pytest.raises(DataError, match="2007_000001.jpg: file not found"):
        pascal.convert(str(voc), str(tmp_path / "out"), image_size=SIZE)
