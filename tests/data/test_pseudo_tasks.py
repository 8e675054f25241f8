"""Pseudo-tasks from unlabelled images: clusters recover flat colour regions, streaming,
statistics, the encoder path, meta-training on the result, and every kind of bad input."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg.datasets import mask_ops, pixel_clusters, pseudo_features
from metaseg.data.image_lists import ImageList
from metaseg.datasets.pseudo_tasks import STATS_FILE, PseudoTaskOptions, make_pseudo_tasks
from metaseg.data.shards import SHARD_SUFFIX, read_shard
from metaseg.data.tasks import TaskStore, list_tasks
from metaseg.errors import ConfigError, DataError
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]
PALETTE = np.array([[230, 20, 20], [20, 200, 20], [20, 20, 230], [235, 235, 235]], np.uint8)
NUM_IMAGES = 12
OPTIONS = PseudoTaskOptions(image_size=32, feature_level=1, num_clusters=4, sample_pixels=3000,
                            min_examples=5, kmeans_batch=256, batch_size=5)


def colour_labels(i: int) -> np.ndarray:
    """int [32, 32] palette indices of image i: background, a 12 px square, an 8 px strip."""
    background = i % 4
    labels = np.full((32, 32), background)
    r, c = 4 * (i % 3), 4 * (i % 5)
    labels[r:r + 12, c:c + 12] = (background + 1) % 4
    labels[24:32, :] = (background + 2) % 4
    return labels


def write_colour_folder(root: pathlib.Path) -> pathlib.Path:
    """12 images of 3 flat colours each: 32 px PNGs, two 64 px and one 48 x 32 px PNG (any
    sizes), one JPEG, in two sub-folders; plus one unreadable file."""
    (root / "sub").mkdir(parents=True)
    for i in range(NUM_IMAGES):
        image = Image.fromarray(PALETTE[colour_labels(i)])
        if i in (8, 9):
            image = image.resize((64, 64), Image.NEAREST)
        elif i == 10:
            image = image.resize((48, 32), Image.NEAREST)
        folder = root / "sub" if i % 2 else root
        if i == 11:
            image.save(folder / f"img{i:02d}.jpg", quality=95)
        else:
            image.save(folder / f"img{i:02d}.png")
    (root / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def colour_dir(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("colours") / "in")


@pytest.fixture(scope="module")
def pseudo_dir(tmp_path_factory, colour_dir):
    out = tmp_path_factory.mktemp("pseudo")
    make_pseudo_tasks(str(colour_dir), str(out), OPTIONS)
    return out


def nearest_palette(images: np.ndarray) -> np.ndarray:
    """int [..., H, W]: index of the palette colour nearest to each pixel."""
    d = np.linalg.norm(images[..., None, :].astype(float) - PALETTE.astype(float), axis=-1)
    return np.argmin(d, axis=-1)


def iou(a, b):
    return np.sum(a & b) / max(np.sum(a | b), 1)


def test_clusters_recover_the_colour_regions(pseudo_dir):
    shards = sorted(f for f in os.listdir(pseudo_dir) if f.endswith(SHARD_SUFFIX))
    assert len(shards) == 4
    colours = []
    for shard in shards:
        images, masks = read_shard(pseudo_dir / shard)
        assert images.shape == (9, 32, 32, 3) and masks.shape == (9, 32, 32)
        assert set(np.unique(masks)) == {0, 255}
        palette = nearest_palette(images)
        colour = np.bincount(palette[masks == 255]).argmax()
        colours.append(colour)
        exact = 0
        for p, m in zip(palette, masks):
            region = p == colour
            assert iou(region, m == 255) > 0.9  # resized and JPEG images blur edges
            exact += np.array_equal(region, m == 255)
        assert exact >= 6  # the 32 px PNGs: the mask is exactly the colour's region
    assert sorted(colours) == [0, 1, 2, 3]  # one pseudo-class per colour


def test_statistics_file(pseudo_dir, colour_dir):
    stats = json.loads((pseudo_dir / STATS_FILE).read_text())
    assert stats["images_listed"] == NUM_IMAGES + 1 and stats["images_used"] == NUM_IMAGES
    assert [os.path.basename(p) for p, _ in stats["skipped"]] == ["broken.png"]
    assert stats["pseudo_classes"] == [f"cluster_{k}" for k in range(4)]
    assert stats["thresholds"]["min_examples"] == 5
    assert stats["pixels_sampled"] == 3000 - 231  # the broken file's quota is lost
    shares = [c["pixel_share"] for c in stats["clusters"]]
    assert sum(shares) == pytest.approx(1.0)
    for c in stats["clusters"]:
        assert c["images_present"] == 9 and c["examples_written"] == 9
        assert sum(c["coverage_histogram"]) == c["images_present"]


def test_same_seed_gives_identical_shards(tmp_path, colour_dir, pseudo_dir):
    make_pseudo_tasks(str(colour_dir), str(tmp_path), OPTIONS)
    for shard in (f for f in os.listdir(pseudo_dir) if f.endswith(SHARD_SUFFIX)):
        assert (tmp_path / shard).read_bytes() == (pseudo_dir / shard).read_bytes()


def test_max_examples_and_image_list(tmp_path, colour_dir):
    options = PseudoTaskOptions(**{**OPTIONS.__dict__, "max_examples": 6})
    listed = ImageList([f"img{i:02d}" for i in range(0, NUM_IMAGES, 2)] + ["sub/img01"])
    stats = make_pseudo_tasks(str(colour_dir), str(tmp_path), options, image_list=listed)
    assert stats["images_used"] == 7
    assert all(c["examples_written"] <= 6 for c in stats["clusters"])
    assert sum(c["examples_written"] for c in stats["clusters"]) > 0


def test_streaming_kmeans_is_memory_bounded():
    kmeans = pixel_clusters.StreamingKMeans(num_clusters=3, batch_size=50, seed=0)
    steps = []
    fit = kmeans.kmeans.partial_fit
    kmeans.kmeans.partial_fit = lambda x: steps.append(len(x)) or fit(x)
    rng = np.random.default_rng(0)
    for _ in range(20):
        kmeans.add(rng.normal(size=(17, 4)).astype(np.float32))
        assert kmeans._buffered < 50  # never more than one batch held
    kmeans.finish()
    assert steps[0] >= 50 and all(s <= 50 for s in steps[1:]) and sum(steps) == 340
    quotas = pixel_clusters.pixel_quotas(num_images=7, cells_per_image=30, sample_pixels=100)
    assert quotas.tolist() == [15, 15, 14, 14, 14, 14, 14]
    assert pixel_clusters.pixel_quotas(3, 10, 100).tolist() == [10, 10, 10]


def test_opening_removes_specks_and_keeps_blocks():
    mask = np.zeros((10, 10), bool)
    mask[1, 8] = True  # a speck
    mask[4:7, 2:5] = True  # a 3 x 3 block
    mask[8:10, 0:6] = True  # a 2 px band on the border: continues beyond it
    mask[2, 2] = True  # a speck next to nothing
    opened = mask_ops.binary_opening(mask, 3)
    expected = np.zeros_like(mask)
    expected[4:7, 2:5] = True
    expected[8:10, 0:6] = True
    np.testing.assert_array_equal(opened, expected)
    np.testing.assert_array_equal(mask_ops.binary_opening(mask, 1), mask)
    with pytest.raises(ConfigError):
        mask_ops.binary_opening(mask, 4)
    up = mask_ops.upsample_nearest(np.array([[1, 2], [3, 4]]), 2)
    np.testing.assert_array_equal(up, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_checkpoint_encoder_backbone(tmp_path, colour_dir):
    """The EfficientLab-encoder path at 32 px: the features are the stored encoder's, and
    the pipeline runs on them (shapes and flow only: the weights are untrained)."""
    import dataclasses

    import tensorflow as tf

    from metaseg.config import ModelConfig
    from metaseg import checkpoints
    from metaseg.models import build_model

    config = ModelConfig(rsd=None)
    model = build_model(config)
    state = checkpoints.MetaState(model, ())
    checkpoints.Saver(state.checkpoint, str(tmp_path), keep=1).save(7)
    checkpoints.write_config(str(tmp_path), {"model": dataclasses.asdict(config)})
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    encoder = model.get_layer("efficientnet_b0")
    normalized = model.get_layer("normalize")(tf.cast(images, tf.float32))
    expected = tf.math.l2_normalize(encoder(normalized, training=False)["reduction_2"], -1)
    feature_fn = pseudo_features.make_feature_fn(str(tmp_path), 2, 32)
    features = feature_fn(images)
    assert features.shape == (2, 8, 8, 24)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="--backbone must be pixels, random, imagenet or"):
        pseudo_features.make_feature_fn(str(tmp_path / "missing"), 2, 32)
    options = PseudoTaskOptions(image_size=32, feature_level=2, num_clusters=2,
                                sample_pixels=200, min_examples=1, min_coverage=0.0,
                                max_coverage=1.0, opening_size=1, kmeans_batch=32)
    out = tmp_path / "pseudo"
    stats = make_pseudo_tasks(str(colour_dir), str(out), options, backbone=str(tmp_path),
                              feature_fn=feature_fn)
    assert stats["pseudo_classes"] and stats["backbone"] == str(tmp_path)
    images, masks = read_shard(out / (stats["pseudo_classes"][0] + SHARD_SUFFIX))
    assert images.shape[1:] == (32, 32, 3) and masks.shape[1:] == (32, 32)


def test_meta_training_runs_on_pseudo_task_shards(tmp_path, pseudo_dir):
    from metaseg.config import InnerConfig, MetaConfig
    from metaseg.meta.trainer import MetaTrainer
    from tests.meta.conftest import tiny_logits_model

    store = TaskStore.load(list_tasks(pseudo_dir), image_size=16, min_examples=4)
    assert store.names == tuple(f"cluster_{k}" for k in range(4))
    model = tiny_logits_model(seed=0)
    before = [v.numpy().copy() for v in model.trainable_variables]
    meta = MetaConfig(meta_iters=2, meta_batch=2, train_shots=4, inner_batch=2, inner_iters=2,
                      eval_interval=2, checkpoint_every=2, seed=0)
    trainer = MetaTrainer(model, store, meta=meta, inner=InnerConfig(sgd=True),
                          checkpoint_dir=str(tmp_path / "run"), total_inner_steps=2)
    assert trainer.train() == 2
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_bad_inputs(tmp_path, colour_dir, pseudo_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no JPEG/PNG images"):
        make_pseudo_tasks(str(empty), str(tmp_path / "o1"), OPTIONS)
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 image files could be read"):
        make_pseudo_tasks(str(unreadable), str(tmp_path / "o2"), OPTIONS)
    too_many = PseudoTaskOptions(**{**OPTIONS.__dict__, "num_clusters": 60, "sample_pixels": 50})
    with pytest.raises(ConfigError, match="--num_clusters 60 is larger than the 50 pixels"):
        make_pseudo_tasks(str(colour_dir), str(tmp_path / "o3"), too_many)
    strict = PseudoTaskOptions(**{**OPTIONS.__dict__, "min_examples": 50, "max_examples": 0})
    with pytest.raises(DataError, match="no cluster yields a pseudo-class.*--min_examples 50"):
        make_pseudo_tasks(str(colour_dir), str(tmp_path / "o4"), strict)
    assert json.loads((tmp_path / "o4" / STATS_FILE).read_text())["pseudo_classes"] == []
    with pytest.raises(DataError, match="already holds 4 cluster_\\* shards"):
        make_pseudo_tasks(str(colour_dir), str(pseudo_dir), OPTIONS)
    with pytest.raises(DataError, match="selects none of the 13 images"):
        make_pseudo_tasks(str(colour_dir), str(tmp_path / "o5"), OPTIONS,
                          image_list=ImageList(["nothing_like_it"]))
    with pytest.raises(ConfigError, match="multiple of 16"):
        make_pseudo_tasks(str(colour_dir), str(tmp_path / "o6"),
                          PseudoTaskOptions(image_size=24), backbone="random")
    with pytest.raises(ConfigError, match="--min_coverage"):
        PseudoTaskOptions(min_coverage=0.9, max_coverage=0.5)


def test_cli_bad_input_is_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"junk")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, str(REPO / "data_tools" / "make_pseudo_tasks.py"), "--input_dir",
         str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--backbone", "pixels",
         "--image_size", "32", "--num_clusters", "2", "--verbosity", "-1"],
        capture_output=True, text=True, env=env, timeout=time_limit(120))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr  # the skipped file is warned about, then:
    assert result.stderr.strip().splitlines()[-1:] == [
        f"error: none of the 1 image files could be read (first: {tmp_path / 'in' / 'a.png'}: "
        "corrupt or truncated image: cannot identify image file "
        f"'{tmp_path / 'in' / 'a.png'}'); check the input folder"]
