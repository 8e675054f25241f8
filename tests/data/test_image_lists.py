"""Image-list files, reproducible fractions, and --image_list in the FSS-1000 converter."""
import numpy as np
import pytest
from PIL import Image

from metaseg.datasets import fss1000 as fss
from data_tools import make_fraction_list
from metaseg.data.image_lists import ImageList, find_images, fraction_of, image_key
from metaseg.data.shards import read_shard
from metaseg.errors import ConfigError, DataError


def test_list_entries_match_trailing_components(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("# comment\n\nJPEGImages/2007_000032.jpg SegmentationClassAug/2007_000032.png"
                    "\nabacus/1\r\n  bus/3.jpg  \n")
    listed = ImageList.read(str(path))
    assert listed.entries == ("JPEGImages/2007_000032", "abacus/1", "bus/3")
    assert "2007_000032" in listed and "abacus/1" in listed and "bus/3" in listed
    assert "abacus/2" not in listed and "bus/1" not in listed and "3" in listed
    assert "VOC/JPEGImages/2007_000032" in listed and "JPEGImages/2007_000033" not in listed
    assert listed.select(["x", "abacus/1"]) == ["abacus/1"]
    with pytest.raises(DataError, match="selects none of the 1 images"):
        listed.select(["nothing"])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no images"):
        ImageList.read(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="cannot read image list"):
        ImageList.read(str(tmp_path / "missing.txt"))


def test_fractions_are_reproducible_and_nested():
    keys = [f"img{i:03d}" for i in range(200)]
    five = fraction_of(keys, 0.05, seed=0)
    assert len(five) == 10 and five == sorted(five)
    assert fraction_of(list(reversed(keys)), 0.05, seed=0) == five  # order does not matter
    assert set(five) <= set(fraction_of(keys, 0.10, seed=0))  # 5 % inside 10 %
    assert fraction_of(keys, 0.05, seed=1) != five
    assert len(fraction_of(keys, 0.001, seed=0)) == 1
    with pytest.raises(ConfigError):
        fraction_of(keys, 0.0, seed=0)


def _fss_folder(root):
    for name in ("abacus", "bus"):
        (root / name).mkdir(parents=True)
        for k in range(1, 5):
            Image.new("RGB", (32, 32), (20 * k,) * 3).save(root / name / f"{k}.jpg")
            mask = np.zeros((32, 32), np.uint8)
            mask[:8 * k] = 255
            Image.fromarray(mask).save(root / name / f"{k}.png")
    return root


def test_fraction_list_script_and_fss_converter_image_list(tmp_path):
    data = _fss_folder(tmp_path / "fss")
    assert [image_key(p) for p in find_images(str(data), (".jpg",))][:2] == ["abacus/1",
                                                                          "abacus/2"]
    out = tmp_path / "half.txt"
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("bus/1\nbus/2\n")
    count = make_fraction_list.write_fraction_list(str(data), 0.5, 0, str(out),
                                                   extensions=["jpg"],
                                                   exclude_list=str(exclude))
    keys = out.read_text().split()
    assert count == 3 == len(keys) and not {"bus/1", "bus/2"} & set(keys)
    with pytest.raises(DataError, match="already exists"):
        make_fraction_list.write_fraction_list(str(data), 0.5, 0, str(out))
    listed = tmp_path / "abacus_2_3.txt"
    listed.write_text("abacus/2\nabacus/3\n")
    options = fss.ConvertOptions(image_size=32, image_list=ImageList.read(str(listed)))
    reports = fss.convert_dataset(str(data), str(tmp_path / "shards"), options, num_workers=1)
    assert {r.name: r.status for r in reports} == {"abacus": "written", "bus": "unlisted"}
    _, masks = read_shard(tmp_path / "shards" / "abacus.tfrecord.gzip")
    assert sorted(int(m.sum() // (255 * 32 * 8)) for m in masks) == [2, 3]
    assert not any(r.skipped for r in reports)
