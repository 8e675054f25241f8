"""Data: what an episode passes through (REFERENCE.md sections 1-3).

Layers, each built on the one before: ``shards`` (the on-disk format) -> ``tasks`` (registry,
splits, the in-memory ``TaskStore``; ``tfds_source`` for ``--dataset tfds:``) -> ``augment``
(six mask-aware augmentations as TF ops) -> ``episodes`` (tf.data samplers). Beside them:
``image_io`` (the one reader of user images and masks), ``image_lists`` (``--train_list``)
and ``progress``. The offline builders that write shards (VOC, COCO, folds, pseudo-tasks,
the embedded synthetic benchmark) are ``metaseg.datasets``; nothing here imports the models,
the meta-learner or anything above them (``tests/test_layering.py``).
"""

from metaseg.data.augment import augment_example, maybe_augment
from metaseg.data.episodes import (evaluation_dataset, evaluation_episode, inner_batch_indices,
                                   make_inner_batches, meta_training_dataset,
                                   sample_task_examples)
from metaseg.data.shards import (FEATURE_SPEC, SHARD_SUFFIX, load_task, mask_to_two_channel,
                                 read_shard, read_shards, resize_examples, serialize_example,
                                 write_shard)
from metaseg.data.tasks import (FPK_SYNONYMS, Splits, Task, TaskStore, list_tasks,
                                make_splits, merge_fpk_tasks, read_class_list)
