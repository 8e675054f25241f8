"""Data: the shard format, the task registry and splits, episodes (REFERENCE.md sections 1-3)."""

from metaseg.data.shards import (FEATURE_SPEC, SHARD_SUFFIX, load_task, mask_to_two_channel,
                                 read_shard, read_shards, resize_examples, serialize_example,
                                 write_shard)
from metaseg.data.tasks import (FPK_SYNONYMS, Splits, Task, TaskStore, list_tasks,
                                make_splits, merge_fpk_tasks, read_class_list)
