"""tf.data episode samplers: meta-training episodes, evaluation episodes, inner mini-batches.

REFERENCE.md sections 3, 6 and 7. All on-graph and stateless: a training element is a pure
function of (seed, its index), so a run resumed at ``start_index`` sees exactly the episodes
it would have seen; an evaluation episode is fixed by (seed, sample, task), so runs compare.
Shapes: ``S`` image side, ``K`` inner steps, ``B`` inner batch. Images float32 in [0, 255];
masks float32 ``[..., 2]`` one-hot (channel 0 background, 1 foreground).
"""

from __future__ import annotations

import functools
import weakref
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from metaseg.config import QUERY_SIZE
from metaseg.data.augment import ALG, as_seed, fold_seed, maybe_augment_batch, split_seed
from metaseg.data.shards import mask_to_two_channel
from metaseg.data.tasks import TaskStore, name_list
from metaseg.errors import ConfigError, DataError

_TRAIN_STREAM, _EVAL_STREAM = 1, 2  # training and evaluation never share random numbers


def inner_batch_indices(num_examples, num_batches: int, batch_size: int, replacement: bool,
                        seed) -> tf.Tensor:
    """Which support example fills each inner batch slot: int32 ``[K, B]`` in [0, n).

    REFERENCE.md section 3. Without replacement: shuffle the support set and walk through
    it, reshuffling whenever it runs out, so a batch may span two passes (and hold the same
    example twice when B > n). With replacement: every batch is a fresh random sample of B
    distinct examples (needs B <= n; ConfigError otherwise).

    Args: num_examples n (int, or int scalar tensor validated up front); num_batches K and
    batch_size B (python ints); seed int [2].
    """
    if num_batches == 0:
        return tf.zeros([0, batch_size], tf.int32)
    if isinstance(num_examples, int):
        _check_batch(num_examples, batch_size, replacement, "--inner-batch")
    n, seed = tf.cast(num_examples, tf.int32), as_seed(seed)
    if replacement:
        keys = tf.random.stateless_uniform([num_batches, n], seed, alg=ALG)
        rows = tf.argsort(keys, axis=1)[:, :batch_size]  # B distinct per batch
        return tf.reshape(tf.cast(rows, tf.int32), [num_batches, batch_size])
    total = num_batches * batch_size
    keys = tf.random.stateless_uniform([(total + n - 1) // n, n], seed, alg=ALG)
    walk = tf.reshape(tf.argsort(keys, axis=1), [-1])[:total]  # one shuffled pass per row
    return tf.reshape(tf.cast(walk, tf.int32), [num_batches, batch_size])


def _check_batch(support: int, batch_size: int, replacement: bool, flag: str) -> None:
    if replacement and batch_size > support:
        raise ConfigError(f"{flag} {batch_size} is larger than the {support} support examples; "
                          f"with --replacement a batch holds distinct examples, so lower {flag} "
                          "or drop --replacement")


def make_inner_batches(images, masks, *, num_batches: int, batch_size: int, replacement: bool,
                       seed, augment: bool = False, aug_rate: float = 0.5):
    """Stack the K inner-loop mini-batches of one adaptation.

    Args: images float32 [n, S, S, 3]; masks float32 [n, S, S, 2]; seed int [2]. With
    ``augment`` every batch slot is augmented with probability ``aug_rate``, independently.
    Returns: x float32 [K, B, S, S, 3], y float32 [K, B, S, S, 2].
    """
    index_seed, aug_seed = tf.unstack(split_seed(seed, 2))
    n = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
    index = inner_batch_indices(n, num_batches, batch_size, replacement, index_seed)
    x, y = tf.gather(images, tf.reshape(index, [-1])), tf.gather(masks, tf.reshape(index, [-1]))
    if augment and num_batches * batch_size > 0:
        x, y = maybe_augment_batch(x, y, aug_seed, aug_rate)
    lead = [num_batches, batch_size]
    return tf.reshape(x, lead + list(images.shape[1:])), tf.reshape(y, lead + list(masks.shape[1:]))


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


def meta_training_dataset(store: TaskStore, *, train_shots: int, inner_iters: int,
                          inner_batch: int, replacement: bool = False, augment: bool = False,
                          aug_rate: float = 0.5, foml_tail: Optional[int] = None,
                          tail_with_replacement: bool = False, seed: int = 0,
                          start_index: int = 0, prefetch: int = 2,
                          keep: Optional[Tuple[int, int, int]] = None) -> tf.data.Dataset:
    """Endless meta-training episodes; element j (from ``start_index``) depends only on (seed, j).

    ``keep=(period, first, count)`` keeps only the episodes j with ``first <= j % period <
    first + count``: the share of each meta-batch one worker of a distributed run adapts to
    (the others are never built). Which episode j is does not change.

    Element: dict ``task`` int32 [], ``x`` float32 [K', B, S, S, 3], ``y`` [K', B, S, S, 2]
    with K' = inner_iters, or inner_iters - 1 with ``foml_tail`` T, which adds the last
    step's batch ``tail_x`` [T, S, S, 3] / ``tail_y`` [T, S, S, 2] (REFERENCE.md section 6).
    ``prefetch`` episodes are buffered; at 224 px an episode takes ~K * B MB.
    """
    _check_training_args(store, train_shots, inner_iters, inner_batch, replacement, foml_tail,
                         tail_with_replacement)
    base, tensors = fold_seed(as_seed(seed), _TRAIN_STREAM), _tensors(store)
    args = dict(train_shots=train_shots, inner_iters=inner_iters, inner_batch=inner_batch,
                replacement=replacement, augment=augment, aug_rate=float(aug_rate),
                foml_tail=foml_tail, tail_with_replacement=tail_with_replacement)

    @tf.autograph.experimental.do_not_convert  # explicit tf control flow only; converting is slow
    def episode(j):
        return _training_episode(tensors, fold_seed(base, j), **args)

    indices = tf.data.Dataset.range(start_index, 2**62)  # endless in practice
    if keep is not None:
        period, first, count = (int(k) for k in keep)
        indices = indices.filter(lambda j: (j % period >= first) & (j % period < first + count))
    return (indices
            .map(episode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(prefetch))


def _training_episode(tensors, seed, *, train_shots, inner_iters, inner_batch, replacement,
                      augment, aug_rate, foml_tail, tail_with_replacement) -> Dict[str, tf.Tensor]:
    task_seed, shot_seed, batch_seed, tail_seed = tf.unstack(split_seed(seed, 4))
    num_tasks = tensors.counts.shape[0]
    task = tf.random.stateless_uniform([], task_seed, 0, num_tasks, tf.int32, alg=ALG)
    images, masks = _gather(tensors, _example_rows(tensors, task, train_shots, shot_seed))
    batches = dict(num_batches=inner_iters, batch_size=inner_batch, replacement=replacement,
                   seed=batch_seed, augment=augment, aug_rate=aug_rate)
    if foml_tail is None:
        x, y = make_inner_batches(images, masks, **batches)
        return {"task": task, "x": x, "y": y}
    (images, masks), (tail_x, tail_y) = _split_tail(
        images, masks, train_shots, foml_tail, tail_with_replacement, tail_seed)
    x, y = make_inner_batches(images, masks, **dict(batches, num_batches=inner_iters - 1))
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


def _check_training_args(store, train_shots, inner_iters, inner_batch, replacement, foml_tail,
                         tail_with_replacement) -> None:
    """Validate at the boundary, naming the flag (ConfigError) or the tasks (DataError)."""
    for value, flag in ((train_shots, "--train-shots"), (inner_iters, "--inner-iters"),
                        (inner_batch, "--inner-batch")):
        if value < 1:
            raise ConfigError(f"{flag} must be positive, got {value}")
    # Tasks with fewer than train_shots examples use all they have (the trainer warns).
    support = min(train_shots, *(store.num_examples(i) for i in range(len(store))))
    if foml_tail is not None:
        if not 0 < foml_tail < train_shots:
            raise ConfigError(f"--foml-tail must be in [1, --train-shots - 1] = [1, "
                              f"{train_shots - 1}], got {foml_tail}")
        support = train_shots - foml_tail if tail_with_replacement else support - foml_tail
        if support < 1:
            short = _short_tasks(store, range(len(store)), foml_tail + 1)
            raise DataError(f"{len(short)} tasks have no examples left after holding out "
                            f"--foml-tail {foml_tail}: {name_list(short)}; lower --foml-tail "
                            "or pass --drop_small_tasks")
    _check_batch(support, inner_batch, replacement, "--inner-batch")


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
    _check_eval_tasks(store, [task_index], shots, query_size)
    out = _evaluation_element(_tensors(store), task_index, sample, shots=shots, eval_iters=0,
                              eval_batch=1, replacement=False, augment=False, aug_rate=0.0,
                              seed=seed, query_size=query_size)
    return out["support_x"], out["support_y"], out["query_x"], out["query_y"]


def _check_eval_tasks(store, task_indices, shots, query_size) -> None:
    if shots < 1:
        raise ConfigError(f"--shots must be positive, got {shots}")
    short = _short_tasks(store, task_indices, shots + query_size)
    if short:
        raise DataError(f"{len(short)} evaluation tasks have fewer than --shots {shots} + "
                        f"{query_size} query examples: {name_list(short)}; lower --shots or "
                        "pass --drop_small_tasks")


def evaluation_dataset(store: TaskStore, task_indices: Sequence[int], *, shots: int,
                       eval_iters: int, eval_batch: int, replacement: bool, augment: bool,
                       aug_rate: float, seed: int, sample: int = 0,
                       prefetch: int = 2) -> tf.data.Dataset:
    """One prefetched element per task of ``task_indices``, in order.

    Element: dict ``task`` int32 [], ``support_x``/``support_y``/``query_x``/``query_y`` as
    ``evaluation_episode`` (same seed, same sets), and the adaptation's inner batches drawn
    from the support set only: ``x`` [eval_iters, eval_batch, S, S, 3], ``y`` [..., 2].
    """
    task_indices = [int(i) for i in task_indices]
    if not task_indices or eval_iters < 0 or eval_batch < 1:
        raise ConfigError(f"need evaluation tasks, --eval-iters >= 0 and --eval-batch > 0; got "
                          f"{len(task_indices)} tasks, {eval_iters} and {eval_batch}")
    _check_eval_tasks(store, task_indices, shots, QUERY_SIZE)
    if eval_iters:  # no inner step, no batch to fill
        _check_batch(shots, eval_batch, replacement, "--eval-batch")
    episode = _evaluation_fn(store, shots=shots, eval_iters=eval_iters, eval_batch=eval_batch,
                             replacement=replacement, augment=augment, aug_rate=float(aug_rate),
                             seed=int(seed))
    sample = tf.constant(sample, tf.int64)
    return (tf.data.Dataset.from_tensor_slices(tf.constant(task_indices, tf.int32))
            .map(lambda task: episode(task, sample), num_parallel_calls=tf.data.AUTOTUNE,
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


def _evaluation_element(tensors, task, sample, *, shots, eval_iters, eval_batch, replacement,
                        augment, aug_rate, seed, query_size=QUERY_SIZE) -> Dict[str, tf.Tensor]:
    task_seed = fold_seed(fold_seed(fold_seed(as_seed(seed), _EVAL_STREAM), sample), task)
    # Distinct examples in random order, so the last `query_size` are a random query set.
    need = shots + query_size
    rows = tf.reshape(_example_rows(tensors, task, need, task_seed), [need])
    out = dict(zip(("support_x", "support_y"), _gather(tensors, rows[:shots])))
    out.update(zip(("query_x", "query_y"), _gather(tensors, rows[shots:])))
    out["x"], out["y"] = make_inner_batches(
        out["support_x"], out["support_y"], num_batches=eval_iters, batch_size=eval_batch,
        replacement=replacement, seed=fold_seed(task_seed, 1), augment=augment,
        aug_rate=aug_rate)
    out["task"] = task
    return out
