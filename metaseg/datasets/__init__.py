"""Datasets: the offline builders that write shards for ``metaseg.data`` to read.

Run once, before training, by ``data_tools/`` (and ``--dataset synthetic``), never on an
episode's path:

- ``synthetic``: the embedded procedural benchmark (``ensure_benchmark``, ``write_benchmark``),
  written in parallel by ``worker_pool``;
- ``voc`` and ``coco`` with ``folds``: PASCAL-5i and COCO-20i, one shard per class and fold;
- ``pseudo_tasks``: self-supervised tasks from unlabelled images (``pseudo_features`` embeds
  them with a backbone, ``pixel_clusters`` groups the pixels, ``mask_ops`` cleans the masks,
  ``pseudo_stats`` keeps the cluster statistics).

This package sits above ``metaseg.models`` and ``metaseg.meta`` (pseudo-tasks embed images
with a network): ``metaseg.data`` may not import it (``tests/test_layering.py``).
"""
