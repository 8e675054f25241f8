"""tf.data episode samplers: meta-training episodes, evaluation episodes, inner mini-batches.

REFERENCE.md sections 3, 6 and 7. All on-graph and stateless: a training element is a pure
function of (seed, its index), so a run resumed at ``start_index`` sees exactly the episodes
it would have seen; an evaluation episode is fixed by (seed, sample, task), so runs compare.
Shapes: ``S`` image side, ``K`` inner steps, ``B`` inner batch. Images float32 in [0, 255];
masks float32 ``[..., 2]`` one-hot (channel 0 background, 1 foreground). What an episode is
and how its batches are drawn come as one validated ``metaseg.specs.EpisodeSpec`` /
``BatchSpec``; the checks here are the ones that need the data (tasks too small).
"""

from __future__ import annotations

import functools
import weakref
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from metaseg.config import QUERY_SIZE
from metaseg.data.augment import ALG, as_seed, fold_seed, maybe_augment_each, split_seed
from metaseg.data.shards import mask_to_two_channel
from metaseg.data.tasks import TaskStore, name_list
from metaseg.errors import ConfigError, DataError
from metaseg.specs import EVALUATION_FIELDS, BatchSpec, EpisodeSpec

_TRAIN_STREAM, _EVAL_STREAM = 1, 2  # training and evaluation never share random numbers


def inner_batch_indices(num_examples, num_batches: int, batches: BatchSpec,
                        seed) -> tf.Tensor:
    """Which support example fills each inner batch slot: int32 ``[K, B]`` in [0, n).

    REFERENCE.md section 3. Without replacement: shuffle the support set and walk through
    it, reshuffling whenever it runs out, so a batch may span two passes (and hold the same
    example twice when B > n). With replacement: every batch is a fresh random sample of B
    distinct examples (needs B <= n: ``BatchSpec.check``).

    Args: num_examples n (int, or int scalar tensor validated up front); num_batches K
    (python int); batches: B = ``batches.size``; seed int [2].
    """
    batch_size, replacement = batches.size, batches.replacement
    if num_batches == 0:
        return tf.zeros([0, batch_size], tf.int32)
    if isinstance(num_examples, int):
        batches.check(num_examples)
    n, seed = tf.cast(num_examples, tf.int32), as_seed(seed)
    if replacement:
        keys = tf.random.stateless_uniform([num_batches, n], seed, alg=ALG)
        rows = tf.argsort(keys, axis=1)[:, :batch_size]  # B distinct per batch
        return tf.reshape(tf.cast(rows, tf.int32), [num_batches, batch_size])
    total = num_batches * batch_size
    keys = tf.random.stateless_uniform([(total + n - 1) // n, n], seed, alg=ALG)
    walk = tf.reshape(tf.argsort(keys, axis=1), [-1])[:total]  # one shuffled pass per row
    return tf.reshape(tf.cast(walk, tf.int32), [num_batches, batch_size])


def make_inner_batches(images, masks, batches: BatchSpec, *, num_batches: int, seed):
    """Stack the K = ``num_batches`` inner-loop mini-batches of one adaptation, drawn as
    ``batches`` says (with ``batches.augment`` every slot is augmented with probability
    ``batches.aug_rate``, independently).

    Args: images float32 [n, S, S, 3]; masks float32 [n, S, S, 2]; seed int [2].
    Returns: x float32 [K, B, S, S, 3], y float32 [K, B, S, S, 2], B = ``batches.size``.
    """
    n = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
    plan = inner_batch_plan(n, batches, num_batches=num_batches, seed=seed)
    return gather_inner_batches(images, masks, plan)


class InnerBatchPlan(NamedTuple):
    """Which support example fills each slot of K inner batches, and how it is augmented:
    a few bytes per slot, so a long adaptation draws it whole and builds its batches a few
    steps at a time (``gather_inner_batches``), exactly as ``make_inner_batches`` would."""

    index: tf.Tensor  # int32 [K, B] in [0, n)
    seeds: Optional[tf.Tensor]  # int64 [K, B, 2] augmentation seed per slot; None: no augment
    aug_rate: float


def inner_batch_plan(num_examples, batches: BatchSpec, *, num_batches: int,
                     seed) -> InnerBatchPlan:
    """The draws of ``make_inner_batches`` for n = ``num_examples`` support examples."""
    index_seed, aug_seed = tf.unstack(split_seed(seed, 2))
    index = inner_batch_indices(num_examples, num_batches, batches, index_seed)
    seeds = None
    if batches.augment and num_batches * batches.size > 0:
        seeds = tf.reshape(split_seed(aug_seed, num_batches * batches.size),
                           [num_batches, batches.size, 2])
    return InnerBatchPlan(index, seeds, batches.aug_rate)


def gather_inner_batches(images, masks, plan: InnerBatchPlan, start: int = 0,
                         stop: Optional[int] = None):
    """Batches ``start:stop`` of ``plan``: x float32 [k, B, S, S, 3], y float32 [k, B, S, S, 2].

    Args: images float32 or uint8 [n, S, S, 3] in [0, 255]; masks float32 [n, S, S, 2]
    one-hot, or uint8 [n, S, S] in {0, 255} (made one-hot here, batch by batch, as
    ``mask_to_two_channel``). Pass tensors: a numpy array would be copied at every call.
    """
    index = plan.index[start:stop]
    flat = tf.reshape(index, [-1])
    x, y = tf.cast(tf.gather(images, flat), tf.float32), tf.gather(masks, flat)
    if len(masks.shape) == 3:
        y = mask_to_two_channel(y)
    if plan.seeds is not None:
        x, y = maybe_augment_each(x, y, tf.reshape(plan.seeds[start:stop], [-1, 2]),
                                  plan.aug_rate)
    lead = list(index.shape)
    return tf.reshape(x, lead + list(images.shape[1:])), tf.reshape(y, lead + list(y.shape[1:]))


class _Tensors(NamedTuple):
    """A TaskStore's images, masks, offsets, counts as variables aliasing their buffers.

    A tf.data map capturing a plain tensor has it serialised (copied) by the graph rewrites
    at every iterator creation: 1.5 GB for FSS-1000 at 224 px. Reading ``.value()`` and then
    gathering also avoids ResourceGather's copy-on-read of a shared buffer.
    """

    images: tf.Variable
    masks: tf.Variable
    offsets: tf.Variable
    counts: tf.Variable


_VARIABLES = weakref.WeakKeyDictionary()


def _tensors(store: TaskStore) -> _Tensors:
    if store not in _VARIABLES:
        with tf.init_scope(), tf.device("/CPU:0"):  # eager, even when first met while tracing
            _VARIABLES[store] = _Tensors(*(tf.Variable(getattr(store, name), trainable=False)
                                           for name in _Tensors._fields))
    return _VARIABLES[store]


def _example_rows(tensors: _Tensors, task_index, n: int, seed) -> tf.Tensor:
    """Rows of min(n, count) distinct random examples of a task, in random order: int32 [m]."""
    keys = tf.random.stateless_uniform([tf.gather(tensors.counts.value(), task_index)],
                                       as_seed(seed), alg=ALG)
    return tf.cast(tf.argsort(keys)[:n], tf.int32) + tf.gather(tensors.offsets.value(), task_index)


def _gather(tensors: _Tensors, rows):
    """Decode rows: images float32 [m, S, S, 3] in [0, 255], masks float32 [m, S, S, 2]."""
    return (tf.cast(tf.gather(tensors.images.value(), rows), tf.float32),
            mask_to_two_channel(tf.gather(tensors.masks.value(), rows)))


def sample_task_examples(store: TaskStore, task_index, n: int, seed):
    """n distinct examples of a task drawn at random (all of them if it has fewer).

    The original always took the first n records of a shard (REFERENCE.md section 11); we
    sample. Returns images float32 [m, S, S, 3] in [0, 255] and masks float32 [m, S, S, 2],
    m = min(n, count), in random order.
    """
    tensors = _tensors(store)
    return _gather(tensors, _example_rows(tensors, task_index, n, seed))


def meta_training_dataset(store: TaskStore, episode: EpisodeSpec, *, seed: int = 0,
                          start_index: int = 0, prefetch: int = 2,
                          keep: Optional[Tuple[int, int, int]] = None) -> tf.data.Dataset:
    """Endless meta-training episodes; element j (from ``start_index``) depends only on (seed, j).

    ``keep=(period, first, count)`` keeps only the episodes j with ``first <= j % period <
    first + count``: the share of each meta-batch one worker of a distributed run adapts to
    (the others are never built). Which episode j is does not change.

    ``episode``: ``episode.shots`` examples of one random task, ``episode.steps`` = K inner
    steps. Element: dict ``task`` int32 [], ``x`` float32 [K', B, S, S, 3], ``y`` [K', B, S,
    S, 2] with K' = K, or K - 1 with ``episode.tail`` T, which adds the last step's batch
    ``tail_x`` [T, S, S, 3] / ``tail_y`` [T, S, S, 2] (REFERENCE.md section 6).
    ``prefetch`` episodes are buffered; at 224 px an episode takes ~K * B MB.
    """
    _check_training_data(store, episode)
    base, tensors = fold_seed(as_seed(seed), _TRAIN_STREAM), _tensors(store)

    @tf.autograph.experimental.do_not_convert  # explicit tf control flow only; converting is slow
    def element(j):
        return _training_episode(tensors, fold_seed(base, j), episode)

    indices = tf.data.Dataset.range(start_index, 2**62)  # endless in practice
    if keep is not None:
        period, first, count = (int(k) for k in keep)
        indices = indices.filter(lambda j: (j % period >= first) & (j % period < first + count))
    return (indices
            .map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(prefetch))


def _training_episode(tensors, seed, episode: EpisodeSpec) -> Dict[str, tf.Tensor]:
    task_seed, shot_seed, batch_seed, tail_seed = tf.unstack(split_seed(seed, 4))
    num_tasks = tensors.counts.shape[0]
    task = tf.random.stateless_uniform([], task_seed, 0, num_tasks, tf.int32, alg=ALG)
    images, masks = _gather(tensors, _example_rows(tensors, task, episode.shots, shot_seed))
    if episode.tail is None:
        x, y = make_inner_batches(images, masks, episode.batches, num_batches=episode.steps,
                                  seed=batch_seed)
        return {"task": task, "x": x, "y": y}
    (images, masks), (tail_x, tail_y) = _split_tail(
        images, masks, episode.shots, episode.tail, episode.tail_with_replacement, tail_seed)
    x, y = make_inner_batches(images, masks, episode.batches, num_batches=episode.steps - 1,
                              seed=batch_seed)
    # The tail batch is never augmented, as in the original (REFERENCE.md section 11).
    return {"task": task, "x": x, "y": y, "tail_x": tail_x, "tail_y": tail_y}


def _split_tail(images, masks, train_shots, tail, with_replacement, seed):
    """((first-steps images, masks), (tail images [tail, ...], masks)) of the sampled shots.

    Default: the shots are in random order; the last ``tail`` are held out: no overlap. With
    replacement (our reading of REFERENCE.md section 6; what the original did): train_shots
    - tail and tail examples drawn independently, with replacement, from the sampled shots.
    """
    if with_replacement:
        m, (first, last) = tf.shape(images)[0], tf.unstack(split_seed(seed, 2))
        rows = (tf.random.stateless_uniform([train_shots - tail], first, 0, m, tf.int32, alg=ALG),
                tf.random.stateless_uniform([tail], last, 0, m, tf.int32, alg=ALG))
        return tuple((tf.gather(images, r), tf.gather(masks, r)) for r in rows)
    keep = tf.shape(images)[0] - tail
    return ((images[:keep], masks[:keep]),
            (tf.ensure_shape(images[keep:], [tail] + images.shape[1:]),
             tf.ensure_shape(masks[keep:], [tail] + masks.shape[1:])))


def _check_training_data(store, episode: EpisodeSpec) -> None:
    """What the spec cannot know: tasks with fewer than ``episode.shots`` examples use all they
    have (the trainer warns), so their support set is smaller (DataError naming the tasks,
    or the spec's FieldError when a batch with replacement no longer fits)."""
    smallest = min(episode.shots, *(store.num_examples(i) for i in range(len(store))))
    tail = episode.tail
    if tail is None:
        support = smallest
    else:
        support = episode.support if episode.tail_with_replacement else smallest - tail
        if support < 1:
            short = _short_tasks(store, range(len(store)), tail + 1)
            raise DataError(f"{len(short)} tasks have no examples left after holding out "
                            f"--foml-tail {tail}: {name_list(short)}; lower --foml-tail "
                            "or pass --drop_small_tasks")
    if support < episode.support:
        episode.batches.check(support, drawn_from="the examples of the smallest task")


def _short_tasks(store, task_indices, need: int):  # "name (count)" of those below `need`
    return [f"{store.names[i]} ({store.num_examples(i)})" for i in task_indices
            if store.num_examples(i) < need]


def evaluation_episode(store: TaskStore, task_index: int, *, shots: int, seed, sample: int = 0,
                       query_size: int = QUERY_SIZE):
    """One evaluation episode: ``shots`` support and ``query_size`` query examples, disjoint.

    REFERENCE.md section 3: draw shots + 5 examples, shuffle, the last 5 are the query. Fixed
    by (seed, sample, task_index). Returns float32 support_x [shots, S, S, 3], support_y
    [shots, S, S, 2], query_x [Q, S, S, 3], query_y [Q, S, S, 2].
    """
    episode = EpisodeSpec(shots, 0, BatchSpec(1), fields=EVALUATION_FIELDS)  # no inner step
    _check_eval_tasks(store, [task_index], shots, query_size)
    out = _evaluation_element(_tensors(store), task_index, sample, episode=episode, seed=seed,
                              query_size=query_size)
    return out["support_x"], out["support_y"], out["query_x"], out["query_y"]


def _check_eval_tasks(store, task_indices, shots, query_size) -> None:
    short = _short_tasks(store, task_indices, shots + query_size)
    if short:
        raise DataError(f"{len(short)} evaluation tasks have fewer than --shots {shots} + "
                        f"{query_size} query examples: {name_list(short)}; lower --shots or "
                        "pass --drop_small_tasks")


def evaluation_dataset(store: TaskStore, task_indices: Sequence[int], episode: EpisodeSpec, *,
                       seed: int, sample: int = 0, prefetch: int = 2) -> tf.data.Dataset:
    """One prefetched element per task of ``task_indices``, in order.

    Element: dict ``task`` int32 [], ``support_x``/``support_y``/``query_x``/``query_y`` as
    ``evaluation_episode`` with ``episode.shots`` (same seed, same sets), and the
    adaptation's inner batches drawn from the support set only: ``x`` [K, B, S, S, 3], ``y``
    [..., 2] with K = ``episode.steps``, B = ``episode.batches.size``.
    """
    task_indices = [int(i) for i in task_indices]
    if not task_indices:
        raise ConfigError("need evaluation tasks, got none")
    _check_eval_tasks(store, task_indices, episode.shots, QUERY_SIZE)
    element = _evaluation_fn(store, episode=episode, seed=int(seed))
    sample = tf.constant(sample, tf.int64)
    return (tf.data.Dataset.from_tensor_slices(tf.constant(task_indices, tf.int32))
            .map(lambda task: element(task, sample), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .prefetch(prefetch))


# Evaluation builds a dataset per sample (200 in the published runs); tracing the episode
# function each time costs seconds, so it is traced once per store and setup.
_EVAL_FNS = weakref.WeakKeyDictionary()


def _evaluation_fn(store: TaskStore, **setup):
    """The compiled (task int32, sample int64) -> evaluation element function of a setup."""
    cache, key = _EVAL_FNS.setdefault(store, {}), tuple(sorted(setup.items()))
    if key not in cache:  # it holds the variables only, so the store can still be freed
        signature = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64)]
        cache[key] = tf.function(functools.partial(_evaluation_element, _tensors(store), **setup),
                                 input_signature=signature, autograph=False)
    return cache[key]


def _evaluation_element(tensors, task, sample, *, episode: EpisodeSpec, seed,
                        query_size=QUERY_SIZE) -> Dict[str, tf.Tensor]:
    task_seed = fold_seed(fold_seed(fold_seed(as_seed(seed), _EVAL_STREAM), sample), task)
    # Distinct examples in random order, so the last `query_size` are a random query set.
    shots = episode.shots
    need = shots + query_size
    rows = tf.reshape(_example_rows(tensors, task, need, task_seed), [need])
    out = dict(zip(("support_x", "support_y"), _gather(tensors, rows[:shots])))
    out.update(zip(("query_x", "query_y"), _gather(tensors, rows[shots:])))
    out["x"], out["y"] = make_inner_batches(
        out["support_x"], out["support_y"], episode.batches, num_batches=episode.steps,
        seed=fold_seed(task_seed, 1))
    out["task"] = task
    return out
