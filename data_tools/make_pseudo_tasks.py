"""Cluster unlabelled images into pseudo-classes, written as shards (UMTFSS's pseudo-tasks).

    python data_tools/make_pseudo_tasks.py --input_dir unlabelled/ --output_dir pseudo/ \\
        [--backbone imagenet|random|pixels|CHECKPOINT_DIR] [--feature_level 3] \\
        [--num_clusters 50] [--sample_pixels 200000] [--image_size 224] \\
        [--min_coverage 0.05] [--max_coverage 0.8] [--min_examples 10] [--max_examples 200] \\
        [--opening_size 3] [--image_list FILE] [--seed 0] [--overwrite]

Pixel embeddings of a backbone (our EfficientNet encoder with ImageNet weights by default,
or the encoder of a metaseg or original TF1 checkpoint directory) are L2-normalised and
clustered by a streaming mini-batch k-means; every image where a cluster covers between
``--min_coverage`` and ``--max_coverage`` of the image becomes an example of the
pseudo-class ``cluster_<k>``, with the cluster's mask. The output folder holds one shard per
pseudo-class and ``pseudo_tasks.json`` (settings, per-cluster statistics): pass it to
``run_metasegnet.py --data-dir``. See ``metaseg/datasets/pseudo_tasks.py`` and the README.
"""

from __future__ import annotations

import time

from absl import app, flags

from metaseg.flags.argv import parse_flags_or_exit
from metaseg.errors import ConfigError, exit_on_error


def define_flags() -> None:
    """Flags are defined only when run as a script, so importing this module is side-free."""
    from metaseg.datasets.pseudo_tasks import PseudoTaskOptions  # the defaults live there

    d = PseudoTaskOptions()
    flags.DEFINE_string("input_dir", None, "Folder of unlabelled JPEG/PNG images (recursive).")
    flags.DEFINE_string("output_dir", None, "Folder for cluster_<k>.tfrecord.gzip shards.")
    flags.DEFINE_string("backbone", "imagenet", "imagenet (Keras ImageNet weights, downloaded "
                        "once), random (untrained: tests), pixels (raw colours: tests) or a "
                        "metaseg / original TF1 checkpoint directory.")
    flags.DEFINE_string("feature_extractor_name", "efficientnet-b0",
                        "Encoder for imagenet/random/TF1 backbones: efficientnet-b0 or -b3.")
    flags.DEFINE_integer("feature_level", d.feature_level,
                         "Encoder reduction 1-4 (stride 2, 4, 8, 16) whose features are used.")
    flags.DEFINE_integer("num_clusters", d.num_clusters, "k of the k-means.")
    flags.DEFINE_integer("sample_pixels", d.sample_pixels,
                         "Feature cells sampled (evenly over the images) per k-means pass.")
    flags.DEFINE_integer("image_size", d.image_size, "Side of the stored square images.")
    flags.DEFINE_float("min_coverage", d.min_coverage,
                       "Least fraction of an image a cluster must cover to make it an example.")
    flags.DEFINE_float("max_coverage", d.max_coverage,
                       "Largest such fraction (larger clusters are background-like).")
    flags.DEFINE_integer("min_examples", d.min_examples,
                         "Least examples for a cluster to become a pseudo-class.")
    flags.DEFINE_integer("max_examples", d.max_examples,
                         "Most examples written per pseudo-class (seeded subset); 0: all.")
    flags.DEFINE_integer("opening_size", d.opening_size, "Square opening (in feature cells) "
                         "that removes specks from cluster masks; 0 or 1: off.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Images per feature batch.")
    flags.DEFINE_integer("kmeans_batch", d.kmeans_batch, "Pixels per k-means mini-batch.")
    flags.DEFINE_integer("kmeans_passes", d.kmeans_passes,
                         "Streamed passes over the images to fit the k-means (fresh samples).")
    flags.DEFINE_string("image_list", None, "Use only the images this list file names.")
    flags.DEFINE_integer("num_workers", None, "Image-decoding threads (default: all CPUs).")
    flags.DEFINE_integer("seed", d.seed, "Seed of pixel sampling, k-means and subsets.")
    flags.DEFINE_bool("overwrite", False, "Replace cluster_* shards already in --output_dir.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    from metaseg.data import image_lists
    from metaseg.datasets import pseudo_tasks

    f = flags.FLAGS
    options = pseudo_tasks.PseudoTaskOptions(
        image_size=f.image_size, feature_level=f.feature_level, num_clusters=f.num_clusters,
        sample_pixels=f.sample_pixels, min_coverage=f.min_coverage,
        max_coverage=f.max_coverage, min_examples=f.min_examples, max_examples=f.max_examples,
        opening_size=f.opening_size, batch_size=f.batch_size, kmeans_batch=f.kmeans_batch,
        kmeans_passes=f.kmeans_passes, seed=f.seed, overwrite=f.overwrite)
    start = time.monotonic()
    summary = pseudo_tasks.make_pseudo_tasks(
        f.input_dir, f.output_dir, options, backbone=f.backbone,
        encoder_name=f.feature_extractor_name, image_list=image_lists.maybe_read(f.image_list),
        num_workers=f.num_workers)
    classes = summary["pseudo_classes"]
    examples = sum(c["examples_written"] for c in summary["clusters"])
    print(f"wrote {len(classes)} pseudo-classes ({examples} examples) from "
          f"{summary['images_used']} images to {f.output_dir} in {time.monotonic() - start:.1f} s"
          f"; statistics in {pseudo_tasks.STATS_FILE}", flush=True)
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} unreadable images:")
        for path, reason in summary["skipped"]:
            print(f"  {path}: {reason}")


if __name__ == "__main__":
    from metaseg.quiet import import_tensorflow

    # before the flag defaults import it: errors stay one line (a bad TF_NUM_*_THREADS too)
    exit_on_error(import_tensorflow)()
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
