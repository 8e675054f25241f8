"""COCO-20i: a fake COCO layout (masks drawn from boxes) to shards and both fold variants."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from data_tools import coco20i_to_tfrecord as coco20i
from metaseg.datasets import folds
from metaseg.data.shards import SHARD_SUFFIX, read_shard, read_shard_with_keys
from metaseg.data.tasks import read_class_list
from metaseg.errors import ConfigError, DataError

SIZE = 16
# Category ids are not contiguous in COCO (1..90 with gaps): class k is the k-th by id.
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
NAMES = [f"thing {k}" for k in range(1, 81)]


def box_mask(annotation, height, width):
    """Stand-in for pycocotools: the annotation's box [x, y, w, h] filled with ones."""
    x, y, w, h = annotation["bbox"]
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def write_split(root, split, images):
    """images: {file stem: [(class index 1-80, [x, y, w, h]), ...]} of 32 x 32 images."""
    folder = root / f"{split}2014"
    folder.mkdir(parents=True)
    data = {"categories": [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, NAMES)],
            "images": [], "annotations": []}
    for image_id, (stem, anns) in enumerate(sorted(images.items()), start=1):
        Image.new("RGB", (32, 32), (image_id * 20,) * 3).save(folder / f"{stem}.jpg")
        data["images"].append({"id": image_id, "file_name": f"{stem}.jpg", "height": 32,
                               "width": 32})
        for k, box in anns:
            data["annotations"].append({"image_id": image_id, "category_id": CATEGORY_IDS[k - 1],
                                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))


@pytest.fixture
def coco_dir(tmp_path):
    root = tmp_path / "coco"
    write_split(root, "train", {"a": [(1, [0, 0, 16, 16]), (1, [16, 16, 8, 8])],
                                "b": [(2, [8, 8, 8, 8]), (5, [0, 0, 1, 1])],
                                "c": [(80, [0, 16, 32, 16])]})
    write_split(root, "val", {"d": [(1, [0, 0, 32, 32])], "e": [(21, [4, 4, 20, 20])]})
    return root


def test_fake_coco_to_shards_and_both_fold_variants(tmp_path, coco_dir):
    out = tmp_path / "out"
    result = coco20i.convert(str(coco_dir), str(out), image_size=SIZE, mask_fn=box_mask)
    # Class 5's 1 x 1 px box vanishes at 16 px: no example, no shard.
    assert result["train"] == {"thing_1": 1, "thing_2": 1, "thing_80": 1}
    assert result["val"] == {"thing_1": 1, "thing_21": 1}
    _, masks = read_shard(out / "train" / ("thing_1" + SHARD_SUFFIX))
    assert all(read_shard_with_keys(out / "train" / ("thing_1" + SHARD_SUFFIX))[2])
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[:8, :8] = 255  # the union of both instances, halved
    expected[8:12, 8:12] = 255
    np.testing.assert_array_equal(masks[0], expected)
    interleaved = read_class_list(out / "interleaved" / "fold0" / "test_classes.txt")
    assert interleaved[:3] == ["thing_1", "thing_5", "thing_9"] and len(interleaved) == 20
    contiguous = read_class_list(out / "contiguous" / "fold1" / "test_classes.txt")
    assert contiguous == [f"thing_{k}" for k in range(21, 41)]
    assert os.path.realpath(out / "interleaved" / "fold0" / ("thing_1" + SHARD_SUFFIX)) == \
        os.path.realpath(out / "val" / ("thing_1" + SHARD_SUFFIX))
    assert os.path.realpath(out / "interleaved" / "fold1" / ("thing_1" + SHARD_SUFFIX)) == \
        os.path.realpath(out / "train" / ("thing_1" + SHARD_SUFFIX))
    assert folds.coco20i_test_indices(0)[-1] == 77


def test_image_list_restricts_training_images(tmp_path, coco_dir):
    listed = tmp_path / "list.txt"
    listed.write_text("train2014/c.jpg\n")
    result = coco20i.convert(str(coco_dir), str(tmp_path / "out"), image_size=SIZE,
                             image_list=str(listed), mask_fn=box_mask)
    assert result["train"] == {"thing_80": 1}
    assert result["val"] == {"thing_1": 1, "thing_21": 1}


def test_bad_coco_input(tmp_path, coco_dir, monkeypatch):
    os.remove(coco_dir / "val2014" / "e.jpg")
    with pytest.raises(DataError, match="1 of the 2 images annotated in .* are missing from "
                                        ".*val2014 \\(first: e.jpg\\); download val2014.zip"):
        coco20i.convert(str(coco_dir), str(tmp_path / "out"), mask_fn=box_mask)
    os.remove(coco_dir / "annotations" / "instances_train2014.json")
    with pytest.raises(DataError, match=r"cannot read .*instances.*annotations_trainval2014\.zip"):
        coco20i.convert(str(coco_dir), str(tmp_path / "out"), mask_fn=box_mask)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install 'metaseg\\[coco\\]'"):
        coco20i.convert(str(coco_dir), str(tmp_path / "out"))
