"""Data: the shard format, the task registry and splits, episodes (REFERENCE.md sections 1-3).

Layers, each built on the one before: ``shards`` (the on-disk format) -> ``tasks`` (registry,
splits, the in-memory ``TaskStore``) -> ``augment`` (six mask-aware augmentations as TF ops)
-> ``episodes`` (tf.data samplers). ``synthetic`` is the embedded benchmark.
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
