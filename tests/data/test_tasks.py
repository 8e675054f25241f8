"""Task registry: listing shards, class lists, splits, FP-k merging, the in-memory store."""
import logging
import os

import numpy as np
import pytest

from metaseg.data.shards import SHARD_SUFFIX, write_shard
from metaseg.data.tasks import (FPK_SYNONYMS, Splits, Task, TaskStore, list_tasks,
                                make_splits, merge_fpk_tasks, read_class_list)
from metaseg.errors import ConfigError, DataError
from metaseg.resources import (FPK_TEST_CLASSES, FSS1000_TEST_CLASSES, FSS1000_TRAIN_CLASSES,
                               resource_path)


def _touch_shards(directory, names):
    """Empty files named like shards: the registry lists file names and never reads them."""
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / (name + SHARD_SUFFIX)).write_bytes(b"")
    return directory


def _names(tasks):
    return [t.name for t in tasks]


# --- list_tasks / read_class_list -------------------------------------------------------

def test_list_tasks_sorted_and_ignores_unfinished_writes(tmp_path):
    _touch_shards(tmp_path, ["zebra", "abe's_flyingfish", "bus"])
    (tmp_path / ".bus.tfrecord.gzip.1a2b3c4d.tmp").write_bytes(b"")
    (tmp_path / ".hidden.tfrecord.gzip").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a shard")
    tasks = list_tasks(tmp_path)
    assert tasks == [Task("abe's_flyingfish", (str(tmp_path / "abe's_flyingfish.tfrecord.gzip"),)),
                     Task("bus", (str(tmp_path / "bus.tfrecord.gzip"),)),
                     Task("zebra", (str(tmp_path / "zebra.tfrecord.gzip"),))]


def test_list_tasks_errors(tmp_path):
    hint = ("pass --data_dir pointing at a folder of <class>.tfrecord.gzip shards (written by "
            "data_tools/fss_1000_image_to_tfrecord.py or make_synthetic_fss.py)")
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        list_tasks(missing)
    assert str(error.value) == f"data directory {missing} does not exist; {hint}"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as error:
        list_tasks(empty)
    assert str(error.value) == f"data directory {empty} is empty; {hint}"
    (empty / "readme.txt").write_text("x")
    (empty / ".a.tfrecord.gzip.0000.tmp").write_text("x")
    with pytest.raises(DataError) as error:
        list_tasks(empty)
    assert str(error.value) == f"data directory {empty} holds no *.tfrecord.gzip shards; {hint}"


def test_read_class_list(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"# held-out classes\r\nbus\r\n\r\n  abe's_flyingfish  \r\n#x\r\nzebra")
    assert read_class_list(path) == ["bus", "abe's_flyingfish", "zebra"]
    fss_test = read_class_list(resource_path(FSS1000_TEST_CLASSES))
    assert len(fss_test) == len(set(fss_test)) == 240
    assert fss_test[:2] == ["bus", "hotel_slipper"]  # CRLF and the provenance line stripped
    fss_train = read_class_list(resource_path(FSS1000_TRAIN_CLASSES))
    assert len(fss_train) == 760 and not set(fss_train) & set(fss_test)


def test_read_class_list_errors(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(DataError) as error:
        read_class_list(missing)
    assert str(error.value) == (f"cannot read class list {missing}: No such file or directory; "
                                "check the path")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n# nothing here\n  \n")
    with pytest.raises(DataError) as error:
        read_class_list(blank)
    assert str(error.value) == f"class list {blank} names no classes; put one class name per line"


# --- splits ------------------------------------------------------------------------------

@pytest.fixture
def fss_like_dir(tmp_path):
    """All 240 FSS-1000 test classes plus the first 20 train classes, as empty shard files."""
    test = read_class_list(resource_path(FSS1000_TEST_CLASSES))
    train = read_class_list(resource_path(FSS1000_TRAIN_CLASSES))[:20]
    return _touch_shards(tmp_path / "shards", test + train), test, train


def test_splits_from_the_fss1000_test_list(fss_like_dir):
    directory, test, train = fss_like_dir
    splits = make_splits(list_tasks(directory), test_classes=test, num_val_tasks=3)
    assert isinstance(splits, Splits)
    assert _names(splits.test) == sorted(test)
    assert _names(splits.val) == sorted(train)[-3:]  # the last 3 training names
    assert _names(splits.train) == sorted(train)[:-3]
    assert splits.test[0].paths == (str(directory / (sorted(test)[0] + SHARD_SUFFIX)),)


def test_unknown_test_classes_are_listed(tmp_path):
    test = read_class_list(resource_path(FSS1000_TEST_CLASSES))
    present = ["bus", "hotel_slipper", "burj_al", "cat", "dog"]
    tasks = list_tasks(_touch_shards(tmp_path, present))
    with pytest.raises(DataError) as error:
        make_splits(tasks, test_classes=test)
    absent = [name for name in test if name not in present]
    assert len(absent) == 237
    assert str(error.value) == (
        f"237 test classes have no shard among the 5 candidate tasks: {', '.join(absent[:10])} "
        "and 227 more (237 in all); check the class list and --data_dir")


def test_default_split_is_by_sorted_name_and_logged(tmp_path, caplog):
    names = [f"class_{i:02d}" for i in range(25)]
    tasks = list_tasks(_touch_shards(tmp_path, names))
    with caplog.at_level(logging.INFO):
        splits = make_splits(tasks)
    assert _names(splits.test) == names[-6:]  # round(0.24 * 25) = 6
    assert _names(splits.train) == names[:-6] and splits.val == ()
    assert "the last 6 of 25 tasks by sorted name are the test set" in caplog.text
    assert _names(make_splits(tasks[:2]).test) == ["class_01"]  # at least one
    with pytest.raises(DataError, match="need at least 2 tasks to split into train and test"):
        make_splits(tasks[:1])


def test_validation_split_errors_and_class_list(tmp_path):
    tasks = list_tasks(_touch_shards(tmp_path, ["a", "b", "c", "d"]))
    with pytest.raises(DataError) as error:
        make_splits(tasks, test_classes=["d"], num_val_tasks=3)
    assert str(error.value) == ("--num_val_tasks 3 leaves no training task: only 3 tasks are not "
                                "in the test set")
    splits = make_splits(tasks, test_classes=["d"], val_classes=["a"])
    assert (_names(splits.train), _names(splits.val), _names(splits.test)) == (["b", "c"], ["a"],
                                                                               ["d"])
    with pytest.raises(DataError, match="1 validation classes have no shard among the 3 "
                                        "candidate tasks: d;"):
        make_splits(tasks, test_classes=["d"], val_classes=["d"])
    with pytest.raises(ConfigError, match="either a validation class list or --num_val_tasks"):
        make_splits(tasks, val_classes=["a"], num_val_tasks=1)


# --- FP-k ---------------------------------------------------------------------------------

FPK_NAMES = ["aeroplane", "airliner", "bus", "cat", "dog", "motorbike", "potted_plant",
             "pottedplant", "school_bus", "television", "tvmonitor"]


def test_fpk_synonyms_cover_the_shipped_class_list():
    assert list(FPK_SYNONYMS) == read_class_list(resource_path(FPK_TEST_CLASSES))


def test_merge_fpk_tasks(tmp_path):
    tasks = list_tasks(_touch_shards(tmp_path, FPK_NAMES))
    merged = {t.name: [os.path.basename(p)[:-len(SHARD_SUFFIX)] for p in t.paths]
              for t in merge_fpk_tasks(tasks)}
    assert merged == {"airliner": ["aeroplane", "airliner"],
                      "bus": ["bus", "school_bus"],  # substring match, as the original
                      "motorbike": ["motorbike"],
                      "potted_plant": ["potted_plant", "pottedplant"],
                      "television": ["television", "tvmonitor"]}


def test_fpk_test_set_holds_out_every_merged_shard(tmp_path):
    tasks = list_tasks(_touch_shards(tmp_path, FPK_NAMES + ["eagle"]))
    splits = make_splits(tasks, fp_k_test_set=True, num_val_tasks=1)
    assert _names(splits.test) == list(FPK_SYNONYMS)
    assert _names(splits.train) == ["cat", "dog"] and _names(splits.val) == ["eagle"]
    with pytest.raises(ConfigError, match="--fp_k_test_set replaces the test-class list"):
        make_splits(tasks, fp_k_test_set=True, test_classes=["cat"])


def test_fpk_without_any_match(tmp_path):
    tasks = list_tasks(_touch_shards(tmp_path, ["cat", "dog"]))
    with pytest.raises(DataError) as error:
        merge_fpk_tasks(tasks)
    assert str(error.value) == (
        "no shard file name contains any FP-k synonym (aeroplane, airliner, bus, motorbike, "
        "potted_plant, pottedplant, television, tvmonitor) among 2 shards; --fp_k_test_set "
        "needs those classes")


# --- TaskStore ----------------------------------------------------------------------------

def test_task_store_load(tiny_shard_dir, tiny_shard_data):
    tasks = list_tasks(tiny_shard_dir)
    store = TaskStore.load(tasks, image_size=32)
    assert len(store) == 6 and store.names == tuple(sorted(tiny_shard_data))
    assert store.image_size == 32
    assert store.images.dtype.name == "uint8" and store.images.shape == (48, 32, 32, 3)
    assert store.masks.dtype.name == "uint8" and store.masks.shape == (48, 32, 32)
    assert store.offsets.numpy().tolist() == [0, 8, 16, 24, 32, 40]
    assert store.counts.numpy().tolist() == [8] * 6 and store.counts.dtype.name == "int32"
    assert store.num_examples(3) == 8 and isinstance(store.num_examples(3), int)
    for i, name in enumerate(store.names):
        images, masks = tiny_shard_data[name]
        np.testing.assert_array_equal(store.images.numpy()[8 * i:8 * i + 8], images)
        np.testing.assert_array_equal(store.masks.numpy()[8 * i:8 * i + 8], masks)


def test_task_store_resizes_at_load(tiny_shard_dir, caplog):
    with caplog.at_level(logging.INFO):
        store = TaskStore.load(list_tasks(tiny_shard_dir)[:2], image_size=16)
    assert store.image_size == 16 and store.images.shape == (16, 16, 16, 3)
    assert set(np.unique(store.masks.numpy())) == {0, 255}
    assert caplog.text.count("Resized tasks stored at [32] px to 16 px") == 1


def test_task_store_merged_task_and_corrupt_shard(tmp_path, tiny_shard_dir):
    tasks = list_tasks(tiny_shard_dir)
    merged = Task("both", tasks[0].paths + tasks[1].paths)
    store = TaskStore.load([merged, tasks[2]], image_size=32)
    assert store.counts.numpy().tolist() == [16, 8]
    bad = tmp_path / ("bad" + SHARD_SUFFIX)
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"^{bad}: shard is truncated or corrupt"):
        TaskStore.load([tasks[0], Task("bad", (str(bad),))], image_size=32)


def test_task_store_small_tasks(tmp_path, make_pairs, caplog):
    sizes = {"big": 6, "tiny": 2, "small": 3}
    for seed, (name, n) in enumerate(sizes.items()):
        images, masks = make_pairs(n, 16, seed=seed)
        write_shard(tmp_path / (name + SHARD_SUFFIX), zip(images, masks))
    tasks = list_tasks(tmp_path)  # big, small, tiny
    with pytest.raises(DataError) as error:
        TaskStore.load(tasks, image_size=16, min_examples=4)
    assert str(error.value) == ("2 tasks have fewer than the 4 examples an episode needs: "
                                "small (3), tiny (2); pass --drop_small_tasks to leave them out")
    with caplog.at_level(logging.WARNING):
        store = TaskStore.load(tasks, image_size=16, min_examples=4, drop_small=True)
    assert store.names == ("big",) and store.counts.numpy().tolist() == [6]
    assert "Dropping 2 tasks with fewer than 4 examples: small (3), tiny (2)" in caplog.text


def test_task_store_from_arrays(make_pairs):
    a, b = make_pairs(3, 32, seed=1), make_pairs(5, 32, seed=2)
    store = TaskStore.from_arrays(["a", "b"], [a[0], b[0]], [a[1], b[1]])
    assert store.offsets.numpy().tolist() == [0, 3] and store.counts.numpy().tolist() == [3, 5]
    np.testing.assert_array_equal(store.masks.numpy()[3:], b[1])
    with pytest.raises(DataError, match="task a: expected uint8 images"):
        TaskStore.from_arrays(["a"], [a[0].astype(np.float32)], [a[1]])
    with pytest.raises(DataError, match="need one images and one masks array per task"):
        TaskStore.from_arrays(["a", "b"], [a[0]], [a[1]])


# --- TaskStore.load(keep_keys=...): --train_list --------------------------------------

def _keyed_tasks(tmp_path, make_pairs, keyed=True):
    tasks = []
    for k, name in enumerate(["cat", "dog"]):
        images, masks = make_pairs(4, 16, seed=k)
        path = str(tmp_path / (name + SHARD_SUFFIX))
        items = [(i, m, f"{name}/{n}") if keyed else (i, m)
                 for n, (i, m) in enumerate(zip(images, masks))]
        write_shard(path, items)
        tasks.append(Task(name, (path,)))
    return tasks


def test_load_keeps_only_listed_images(tmp_path, make_pairs):
    from metaseg.data.image_lists import ImageList
    tasks = _keyed_tasks(tmp_path, make_pairs)
    store = TaskStore.load(tasks, 16, keep_keys=ImageList(["cat/1", "cat/3", "dog/0"], "l.txt"))
    assert store.names == ("cat", "dog")
    assert [store.num_examples(i) for i in range(2)] == [2, 1]
    cat_images, _ = make_pairs(4, 16, seed=0)
    np.testing.assert_array_equal(store.images.numpy()[:2], cat_images[[1, 3]])
    # a plain set works too; a task with nothing listed is dropped
    store = TaskStore.load(tasks, 16, keep_keys={"dog/2"})
    assert store.names == ("dog",) and store.num_examples(0) == 1
    # without a list, everything
    assert len(TaskStore.load(tasks, 16).images) == 8


def test_load_with_list_errors(tmp_path, make_pairs):
    from metaseg.data.image_lists import ImageList
    tasks = _keyed_tasks(tmp_path, make_pairs)
    with pytest.raises(DataError, match="train_9.txt selects none"):
        TaskStore.load(tasks, 16, keep_keys=ImageList(["horse/1"], "train_9.txt"))
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    plain = _keyed_tasks(plain_dir, make_pairs, keyed=False)
    assert len(TaskStore.load(plain, 16).images) == 8  # the original's format still loads
    with pytest.raises(DataError, match="re-convert with a current converter"):
        TaskStore.load(plain, 16, keep_keys={"cat/1"})
