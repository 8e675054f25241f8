"""tf.data episode samplers: meta-training episodes, evaluation episodes, inner mini-batches.

REFERENCE.md sections 3, 6 and 7. Everything is on-graph and stateless: an element is a pure
function of (seed, its index) (training) or (seed, sample, task) (evaluation), so a run
resumed at ``start_index`` sees exactly the episodes it would have seen, and two runs with
the same seed evaluate on the same support and query sets.

Shapes below: ``S`` image side, ``K`` inner steps, ``B`` inner batch size. Images are float32
in [0, 255]; masks float32 ``[..., 2]`` one-hot (channel 0 background, 1 foreground).
"""

from __future__ import annotations

import functools
import weakref
from typing import Dict, Optional, Sequence

import tensorflow as tf
from absl import logging

from metaseg.config import QUERY_SIZE
from metaseg.data.augment import ALG, as_seed, fold_seed, maybe_augment_batch, split_seed
from metaseg.data.shards import mask_to_two_channel
from metaseg.data.tasks import TaskStore, name_list
from metaseg.errors import ConfigError, DataError

# Seed streams: one per use, so training and evaluation never share random numbers.
_TRAIN_STREAM, _EVAL_STREAM = 1, 2
_LAST_INDEX = 2**62  # "infinite" training stream


# ---------------------------------------------------------------- mini-batches
def inner_batch_indices(num_examples, num_batches: int, batch_size: int, replacement: bool,
                        seed) -> tf.Tensor:
    """Which support example fills each inner batch slot: int32 ``[K, B]`` in [0, n).

    REFERENCE.md section 3. Without replacement: shuffle the support set and walk through
    it, reshuffling whenever it runs out, so a batch may span two passes (and hold the same
    example twice when B > n). With replacement: every batch is a fresh random sample of B
    distinct examples (needs B <= n).

    Args: num_examples n (int or int scalar tensor); num_batches K and batch_size B (python
    ints); replacement; seed int [2].
    """
    if num_batches == 0:
        return tf.zeros([0, batch_size], tf.int32)
    if isinstance(num_examples, int):
        _check_batch(num_examples, batch_size, replacement, "--inner-batch")
    n = tf.cast(num_examples, tf.int32)
    seed = as_seed(seed)
    if replacement:
        with tf.control_dependencies([tf.debugging.assert_greater_equal(
                n, batch_size, message="inner batch larger than the support set (--replacement)")]):
            keys = tf.random.stateless_uniform([num_batches, n], seed, alg=ALG)
        rows = tf.argsort(keys, axis=1)[:, :batch_size]  # B distinct per batch
        return tf.reshape(tf.cast(rows, tf.int32), [num_batches, batch_size])
    total = num_batches * batch_size
    passes = (total + n - 1) // n
    keys = tf.random.stateless_uniform([passes, n], seed, alg=ALG)
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
    index = tf.reshape(inner_batch_indices(n, num_batches, batch_size, replacement, index_seed),
                       [-1])
    x, y = tf.gather(images, index), tf.gather(masks, index)
    if augment and num_batches * batch_size > 0:
        x, y = maybe_augment_batch(x, y, aug_seed, aug_rate)
    lead = [num_batches, batch_size]
    return tf.reshape(x, lead + list(images.shape[1:])), tf.reshape(y, lead + list(masks.shape[1:]))


# ---------------------------------------------------------------- task examples
# The store's tensors wrapped once per store in variables that alias their buffers. A
# tf.data map that captures a plain tensor gets it serialised (copied) at every iterator
# creation by the graph rewrites: 1.5 GB for FSS-1000 at 224 px. Reading via .value() and
# gathering from that avoids ResourceGather's copy-on-read of a shared buffer.
_VARIABLES = weakref.WeakKeyDictionary()


def _store_variables(store: TaskStore):
    if store not in _VARIABLES:
        with tf.init_scope(), tf.device("/CPU:0"):  # eager, even when first met while tracing
            _VARIABLES[store] = tuple(tf.Variable(t, trainable=False) for t in
                                      (store.images, store.masks, store.offsets, store.counts))
    return _VARIABLES[store]


def _example_indices(store: TaskStore, task_index, n: int, seed) -> tf.Tensor:
    """Rows of min(n, count) distinct random examples of a task, in random order: int32 [m]."""
    _, _, offsets, counts = _store_variables(store)
    count = tf.gather(counts.value(), task_index)
    keys = tf.random.stateless_uniform([count], as_seed(seed), alg=ALG)
    return tf.cast(tf.argsort(keys)[:n], tf.int32) + tf.gather(offsets.value(), task_index)


def _gather_examples(store: TaskStore, rows):
    """Decode rows of the store: images float32 [m, S, S, 3], masks float32 [m, S, S, 2]."""
    images, masks, _, _ = _store_variables(store)
    return (tf.cast(tf.gather(images.value(), rows), tf.float32),
            mask_to_two_channel(tf.gather(masks.value(), rows)))


def sample_task_examples(store: TaskStore, task_index, n: int, seed):
    """n distinct examples of a task drawn at random (all of them if it has fewer).

    The original always took the first n records of a shard (REFERENCE.md section 11); we
    sample. Returns images float32 [m, S, S, 3] in [0, 255], masks float32 [m, S, S, 2],
    m = min(n, count), in random order.
    """
    return _gather_examples(store, _example_indices(store, task_index, n, seed))


# ---------------------------------------------------------------- meta-training
def meta_training_dataset(store: TaskStore, *, train_shots: int, inner_iters: int,
                          inner_batch: int, replacement: bool = False, augment: bool = False,
                          aug_rate: float = 0.5, foml_tail: Optional[int] = None,
                          tail_with_replacement: bool = False, seed: int = 0,
                          start_index: int = 0, prefetch: int = 2) -> tf.data.Dataset:
    """Endless meta-training episodes; element j (from ``start_index``) depends only on (seed, j).

    Element: dict ``task`` int32 [], ``x`` float32 [K', B, S, S, 3], ``y`` [K', B, S, S, 2]
    with K' = inner_iters, or inner_iters - 1 with ``foml_tail`` T, which adds the last
    step's batch ``tail_x`` [T, S, S, 3] / ``tail_y`` [T, S, S, 2] (REFERENCE.md section 6).
    ``prefetch`` episodes are buffered; at 224 px one episode is ~K*B*1 MB.
    """
    _check_training_args(store, train_shots, inner_iters, inner_batch, replacement, foml_tail,
                         tail_with_replacement)
    base = fold_seed(as_seed(seed), _TRAIN_STREAM)
    args = dict(train_shots=train_shots, inner_iters=inner_iters, inner_batch=inner_batch,
                replacement=replacement, augment=augment, aug_rate=float(aug_rate),
                foml_tail=foml_tail, tail_with_replacement=tail_with_replacement)

    @tf.autograph.experimental.do_not_convert  # explicit tf control flow only; converting is slow
    def episode(j):
        return _training_episode(store, fold_seed(base, j), **args)

    return (tf.data.Dataset.range(start_index, _LAST_INDEX)
            .map(episode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(prefetch))


def _training_episode(store, seed, *, train_shots, inner_iters, inner_batch, replacement,
                      augment, aug_rate, foml_tail, tail_with_replacement) -> Dict[str, tf.Tensor]:
    task_seed, shot_seed, batch_seed, tail_seed = tf.unstack(split_seed(seed, 4))
    task = tf.random.stateless_uniform([], task_seed, 0, len(store), tf.int32, alg=ALG)
    images, masks = sample_task_examples(store, task, train_shots, shot_seed)
    batches = dict(num_batches=inner_iters, batch_size=inner_batch, replacement=replacement,
                   augment=augment, aug_rate=aug_rate)
    if foml_tail is None:
        x, y = make_inner_batches(images, masks, seed=batch_seed, **batches)
        return {"task": task, "x": x, "y": y}
    (images, masks), (tail_x, tail_y) = _split_tail(
        images, masks, train_shots, foml_tail, tail_with_replacement, tail_seed)
    batches["num_batches"] = inner_iters - 1
    x, y = make_inner_batches(images, masks, seed=batch_seed, **batches)
    # The tail batch is never augmented, as in the original (REFERENCE.md section 11).
    return {"task": task, "x": x, "y": y, "tail_x": tail_x, "tail_y": tail_y}


def _split_tail(images, masks, train_shots, tail, with_replacement, seed):
    """(first-steps examples, held-out tail of ``tail`` examples) of the sampled shots.

    Without replacement: the shots are already in random order; the last ``tail`` are held
    out, so the parts never overlap. With replacement (our reading of REFERENCE.md section 6,
    as the original did it): both parts are drawn independently, with replacement, from the
    sampled shots: ``train_shots - tail`` for the first steps, ``tail`` for the last, so
    they may repeat and overlap.
    """
    size = list(images.shape[1:])
    if with_replacement:
        part_seed, tail_seed = tf.unstack(split_seed(seed, 2))
        m = tf.shape(images)[0]
        part = tf.random.stateless_uniform([train_shots - tail], part_seed, 0, m, tf.int32, alg=ALG)
        held = tf.random.stateless_uniform([tail], tail_seed, 0, m, tf.int32, alg=ALG)
        return (tf.gather(images, part), tf.gather(masks, part)), \
            (tf.gather(images, held), tf.gather(masks, held))
    keep = tf.shape(images)[0] - tail
    return (images[:keep], masks[:keep]), \
        (tf.reshape(images[keep:], [tail] + size), tf.reshape(masks[keep:], [tail] + size[:2] + [2]))


def _check_training_args(store, train_shots, inner_iters, inner_batch, replacement, foml_tail,
                         tail_with_replacement) -> None:
    """Validate at the boundary, naming the flag (ConfigError) or the tasks (DataError)."""
    for value, flag in ((train_shots, "--train-shots"), (inner_iters, "--inner-iters"),
                        (inner_batch, "--inner-batch")):
        if value < 1:
            raise ConfigError(f"{flag} must be positive, got {value}")
    counts = [store.num_examples(i) for i in range(len(store))]
    small = [f"{n} ({c})" for n, c in zip(store.names, counts) if c < train_shots]
    if small:
        logging.warning("%d tasks have fewer than --train-shots %d examples; their episodes use "
                        "all they have: %s", len(small), train_shots, name_list(small))
    support = min(train_shots, min(counts))
    if foml_tail is not None:
        if not 0 < foml_tail < train_shots:
            raise ConfigError(f"--foml-tail must be in [1, --train-shots - 1] = [1, "
                              f"{train_shots - 1}], got {foml_tail}")
        support = train_shots - foml_tail if tail_with_replacement else support - foml_tail
        if support < 1:
            short = [f"{n} ({c})" for n, c in zip(store.names, counts) if c <= foml_tail]
            raise DataError(f"{len(short)} tasks have no examples left after holding out "
                            f"--foml-tail {foml_tail}: {name_list(short)}; lower --foml-tail "
                            "or pass --drop_small_tasks")
    _check_batch(support, inner_batch, replacement, "--inner-batch")


# ---------------------------------------------------------------- evaluation
def evaluation_episode(store: TaskStore, task_index: int, *, shots: int, seed, sample: int = 0,
                       query_size: int = QUERY_SIZE):
    """One evaluation episode: ``shots`` support and ``query_size`` query examples, disjoint.

    REFERENCE.md section 3: draw shots + 5 examples, shuffle, the last 5 are the query. Fixed
    by (seed, sample, task_index). Returns support_x [shots, S, S, 3], support_y
    [shots, S, S, 2], query_x [Q, S, S, 3], query_y [Q, S, S, 2], float32.
    """
    _check_eval_tasks(store, [task_index], shots, query_size)
    episode = _eval_episode(store, task_index, shots, query_size, _eval_seed(seed, sample, task_index))
    return episode["support_x"], episode["support_y"], episode["query_x"], episode["query_y"]


def _eval_seed(seed, sample, task_index):
    return fold_seed(fold_seed(fold_seed(as_seed(seed), _EVAL_STREAM), sample), task_index)


def _eval_episode(store, task_index, shots, query_size, seed) -> Dict[str, tf.Tensor]:
    # Distinct examples in random order, so the last `query_size` are a random query set.
    rows = _example_indices(store, task_index, shots + query_size, seed)
    rows = tf.reshape(rows, [shots + query_size])
    support_x, support_y = _gather_examples(store, rows[:shots])
    query_x, query_y = _gather_examples(store, rows[shots:])
    return {"support_x": support_x, "support_y": support_y, "query_x": query_x, "query_y": query_y}


def _check_eval_tasks(store, task_indices, shots, query_size) -> None:
    if shots < 1:
        raise ConfigError(f"--shots must be positive, got {shots}")
    need = shots + query_size
    short = [f"{store.names[i]} ({store.num_examples(i)})" for i in task_indices
             if store.num_examples(i) < need]
    if short:
        raise DataError(f"{len(short)} evaluation tasks have fewer than --shots {shots} + "
                        f"{query_size} query = {need} examples: {name_list(short)}; lower "
                        "--shots or pass --drop_small_tasks")


def evaluation_dataset(store: TaskStore, task_indices: Sequence[int], *, shots: int,
                       eval_iters: int, eval_batch: int, replacement: bool, augment: bool,
                       aug_rate: float, seed, sample: int = 0, prefetch: int = 2) -> tf.data.Dataset:
    """One prefetched element per task of ``task_indices``, in order.

    Element: dict ``task`` int32 [], ``support_x``/``support_y``/``query_x``/``query_y`` as
    ``evaluation_episode`` (same seed, same sets), and the adaptation's inner batches drawn
    from the support set only: ``x`` [eval_iters, eval_batch, S, S, 3], ``y`` [..., 2].
    """
    task_indices = [int(i) for i in task_indices]
    if not task_indices:
        raise DataError("no evaluation tasks; check the splits")
    if eval_iters < 0 or eval_batch < 1:
        raise ConfigError(f"--eval-iters must be >= 0 and --eval-batch positive, got "
                          f"{eval_iters} and {eval_batch}")
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
# function each time would cost seconds per sample, so it is traced once per store and setup.
_EVAL_FNS = weakref.WeakKeyDictionary()


def _evaluation_fn(store: TaskStore, **setup):
    """The compiled (task int32, sample int64) -> evaluation element function of a setup."""
    cache = _EVAL_FNS.setdefault(store, {})
    key = tuple(sorted(setup.items()))
    if key not in cache:
        _store_variables(store)
        cache[key] = tf.function(functools.partial(_evaluation_element, store, **setup),
                                 input_signature=[tf.TensorSpec([], tf.int32),
                                                  tf.TensorSpec([], tf.int64)],
                                 autograph=False)
    return cache[key]


def _evaluation_element(store, task, sample, *, shots, eval_iters, eval_batch, replacement,
                        augment, aug_rate, seed) -> Dict[str, tf.Tensor]:
    task_seed = _eval_seed(seed, sample, task)
    out = _eval_episode(store, task, shots, QUERY_SIZE, task_seed)
    out["x"], out["y"] = make_inner_batches(
        out["support_x"], out["support_y"], num_batches=eval_iters, batch_size=eval_batch,
        replacement=replacement, seed=fold_seed(task_seed, 1), augment=augment,
        aug_rate=aug_rate)
    out["task"] = task
    return out
