"""Episode samplers: REFERENCE.md section 3 batching, determinism by index, splits and resume.

Every example image is filled with its global row number in the store, and its mask's
foreground is the first ``row % S`` rows, so any gathered example can be identified.
"""
import numpy as np
import pytest
import tensorflow as tf

from metaseg.data import episodes
from metaseg.data.tasks import TaskStore
from metaseg.errors import DataError, FieldError
from metaseg.specs import TRAINING_FIELDS, BatchSpec, EpisodeSpec

S = 32
COUNTS = (10, 12, 15, 6)


def _arrays(counts):
    images, masks, row = [], [], 0
    for n in counts:
        ids = np.arange(row, row + n)
        images.append(np.broadcast_to(ids[:, None, None, None], (n, S, S, 3)).astype(np.uint8))
        fg = np.arange(S)[None, :, None] < (ids % S)[:, None, None]
        masks.append(np.broadcast_to(fg, (n, S, S)).astype(np.uint8) * 255)
        row += n
    return images, masks


@pytest.fixture(scope="module")
def store():
    images, masks = _arrays(COUNTS)
    return TaskStore.from_arrays([f"task{i}" for i in range(len(COUNTS))], images, masks)


def _task_rows(task):
    start = sum(COUNTS[:task])
    return set(range(start, start + COUNTS[task]))


def _ids(x, y=None):
    """Row number of each (unaugmented) example of x [..., S, S, 3]; checks y agrees."""
    x = np.asarray(x)
    ids = x[..., 0, 0, 0].astype(int)
    np.testing.assert_array_equal(x, np.broadcast_to(ids[..., None, None, None], x.shape))
    if y is not None:
        fg = np.arange(S)[:, None] < (ids % S)[..., None, None]
        np.testing.assert_array_equal(np.asarray(y)[..., 1], np.broadcast_to(fg, ids.shape + (S, S)))
        np.testing.assert_array_equal(np.asarray(y).sum(-1), 1.0)
    return ids


def _take(dataset, n):
    return [{k: v.numpy() for k, v in e.items()} for e in dataset.take(n)]


def _seed(i):
    return tf.constant([i, 3], tf.int64)


# ---------------------------------------------------------------- inner batch indices
def _assert_walk(flat, items):
    """flat walks through shuffled passes of ``items``: each pass complete, but the last."""
    items = set(items)
    for start in range(0, len(flat), len(items)):
        chunk = flat[start:start + len(items)].tolist()
        assert len(set(chunk)) == len(chunk) and set(chunk) <= items
        assert len(chunk) < len(items) or set(chunk) == items


def test_without_replacement_batches_span_shuffled_passes():
    idx = episodes.inner_batch_indices(5, 4, BatchSpec(8, False), _seed(0)).numpy()
    assert idx.shape == (4, 8) and idx.dtype == np.int32
    flat = idx.reshape(-1)
    _assert_walk(flat, range(5))
    assert all(sorted(flat[p * 5:(p + 1) * 5].tolist()) == list(range(5)) for p in range(6))
    # 8 > 5: every batch holds some example twice, and spans two passes.
    assert all(len(set(row.tolist())) < 8 for row in idx)
    passes = {tuple(flat[p * 5:(p + 1) * 5]) for p in range(6)}
    assert len(passes) > 1  # each pass is freshly shuffled


def test_without_replacement_smaller_batches_walk_across_batches():
    idx = episodes.inner_batch_indices(10, 7, BatchSpec(3, False), _seed(1)).numpy()
    flat = idx.reshape(-1)
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert sorted(flat[10:20].tolist()) == list(range(10))
    _assert_walk(flat, range(10))


def test_with_replacement_each_batch_is_distinct_and_fresh():
    idx = episodes.inner_batch_indices(5, 50, BatchSpec(4, True), _seed(2)).numpy()
    assert idx.shape == (50, 4)
    assert all(len(set(row.tolist())) == 4 for row in idx)
    assert idx.min() == 0 and idx.max() == 4
    assert len({tuple(row) for row in idx}) > 10
    # Not a walk: some example is drawn again before the others were used.
    assert not all(sorted(idx.reshape(-1)[p * 5:(p + 1) * 5].tolist()) == list(range(5))
                   for p in range(40))


def test_with_replacement_batch_larger_than_support_is_a_config_error():
    with pytest.raises(FieldError, match=r"size \(8\) must be <= the 5 support examples with "
                                         "replacement") as info:
        episodes.inner_batch_indices(5, 3, BatchSpec(8, True), _seed(0))
    assert info.value.field == "size"  # a spec built without config fields names its own
    named = BatchSpec(8, True, fields=TRAINING_FIELDS)
    with pytest.raises(FieldError, match=r"meta.inner_batch \(8\).*inner.replacement") as info:
        episodes.inner_batch_indices(5, 3, named, _seed(0))
    assert info.value.field == "meta.inner_batch"


def test_indices_are_a_function_of_the_seed_and_agree_for_tensor_sizes():
    a = episodes.inner_batch_indices(5, 4, BatchSpec(8, False), _seed(7)).numpy()
    b = episodes.inner_batch_indices(tf.constant(5), 4, BatchSpec(8, False), _seed(7)).numpy()
    c = episodes.inner_batch_indices(5, 4, BatchSpec(8, False), _seed(8)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- inner batches
def _support(store, task=0, n=5):
    rows = sorted(_task_rows(task))[:n]
    images = tf.cast(tf.gather(store.images, rows), tf.float32)
    masks = tf.stack([(255.0 - tf.cast(tf.gather(store.masks, rows), tf.float32)) / 255.0,
                      tf.cast(tf.gather(store.masks, rows), tf.float32) / 255.0], -1)
    return images, masks, rows


def test_make_inner_batches_gathers_support_examples_in_walk_order(store):
    images, masks, rows = _support(store)
    x, y = episodes.make_inner_batches(images, masks, BatchSpec(8), num_batches=4,
                                       seed=_seed(0))
    assert x.shape == (4, 8, S, S, 3) and y.shape == (4, 8, S, S, 2)
    ids = _ids(x, y)
    position = {r: i for i, r in enumerate(rows)}
    _assert_walk(np.vectorize(position.get)(ids).reshape(-1), range(5))


def test_make_inner_batches_augment_rate_0_and_1(store):
    images, masks, _ = _support(store)
    kwargs = dict(num_batches=3, seed=_seed(4))
    plain = episodes.make_inner_batches(images, masks, BatchSpec(4, True), **kwargs)
    none = episodes.make_inner_batches(images, masks, BatchSpec(4, True, True, 0.0), **kwargs)
    every = episodes.make_inner_batches(images, masks, BatchSpec(4, True, True, 1.0), **kwargs)
    np.testing.assert_array_equal(plain[0], none[0])
    np.testing.assert_array_equal(plain[1], none[1])
    for slot, original in zip(np.reshape(every[0], (-1, S, S, 3)), np.reshape(plain[0], (-1, S, S, 3))):
        assert not np.array_equal(slot, original)
    assert np.all(np.asarray(every[1]).sum(-1) == 1.0)


def test_make_inner_batches_with_zero_batches():
    images, masks = tf.zeros([5, S, S, 3]), tf.zeros([5, S, S, 2])
    x, y = episodes.make_inner_batches(images, masks, BatchSpec(8, augment=True), num_batches=0,
                                       seed=_seed(0))
    assert x.shape == (0, 8, S, S, 3) and y.shape == (0, 8, S, S, 2)


# ---------------------------------------------------------------- task examples
def test_sample_task_examples_draws_distinct_random_examples(store):
    draws = []
    for i in range(12):
        images, masks = episodes.sample_task_examples(store, 2, 4, _seed(i))
        ids = _ids(images, masks)
        assert len(set(ids.tolist())) == 4 and set(ids.tolist()) <= _task_rows(2)
        draws.append(frozenset(ids.tolist()))
    first_four = frozenset(sorted(_task_rows(2))[:4])
    assert len(set(draws)) > 6 and any(d != first_four for d in draws)


def test_sample_task_examples_returns_all_when_the_task_is_small(store):
    images, _ = episodes.sample_task_examples(store, 3, 9, _seed(0))
    assert set(_ids(images).tolist()) == _task_rows(3)


# ---------------------------------------------------------------- meta-training
def _training(shots, steps, batch, replacement=False, augment=False, aug_rate=0.5, tail=None,
              tail_with_replacement=False):
    return EpisodeSpec(shots, steps, BatchSpec(batch, replacement, augment, aug_rate,
                                               fields=TRAINING_FIELDS),
                       tail=tail, tail_with_replacement=tail_with_replacement,
                       fields=TRAINING_FIELDS)


TRAIN = _training(shots=4, steps=3, batch=6)


@pytest.fixture(scope="module")
def train_elements(store):
    return _take(episodes.meta_training_dataset(store, TRAIN, seed=7), 24)


def test_training_elements_have_static_shapes(store):
    spec = episodes.meta_training_dataset(store, TRAIN, seed=7).element_spec
    assert spec["x"].shape == (3, 6, S, S, 3) and spec["y"].shape == (3, 6, S, S, 2)
    assert spec["task"].shape == () and spec["task"].dtype == tf.int32


def test_training_episode_is_one_task_walked_in_passes(train_elements):
    tasks = set()
    for e in train_elements:
        ids = _ids(e["x"], e["y"]).reshape(-1)
        shots = set(ids[:4].tolist())
        assert len(shots) == 4 and shots <= _task_rows(int(e["task"]))
        assert set(ids.tolist()) == shots  # only the 4 sampled shots are used
        _assert_walk(ids, shots)
        tasks.add(int(e["task"]))
    assert tasks == set(range(len(COUNTS)))  # tasks drawn uniformly: all seen in 24


def test_training_is_deterministic_and_resumes_at_start_index(store, train_elements):
    again = _take(episodes.meta_training_dataset(store, TRAIN, seed=7), 24)
    resumed = _take(episodes.meta_training_dataset(store, TRAIN, seed=7, start_index=10), 14)
    other = _take(episodes.meta_training_dataset(store, TRAIN, seed=8), 4)
    for a, b in zip(train_elements, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(train_elements[10:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["x"], b["x"]) for a, b in zip(train_elements, other))


def test_foml_tail_is_held_out_and_never_augmented(store):
    dataset = episodes.meta_training_dataset(store, _training(6, 4, 4, tail=2), seed=1)
    spec = dataset.element_spec
    assert spec["x"].shape == (3, 4, S, S, 3) and spec["tail_x"].shape == (2, S, S, 3)
    assert spec["tail_y"].shape == (2, S, S, 2)
    for e in _take(dataset, 8):
        body, tail = set(_ids(e["x"], e["y"]).ravel()), set(_ids(e["tail_x"], e["tail_y"]))
        assert len(body) == 4 and len(tail) == 2 and not body & tail
        assert body | tail <= _task_rows(int(e["task"]))
    augmented = episodes.meta_training_dataset(
        store, _training(6, 4, 4, augment=True, aug_rate=1.0, tail=2), seed=1)
    for plain, e in zip(_take(dataset, 3), _take(augmented, 3)):
        np.testing.assert_array_equal(plain["tail_x"], e["tail_x"])
        np.testing.assert_array_equal(plain["tail_y"], e["tail_y"])
        assert not np.array_equal(plain["x"], e["x"])


def test_foml_tail_with_replacement_draws_both_parts_from_the_shots(store):
    dataset = episodes.meta_training_dataset(
        store, _training(6, 3, 4, replacement=True, tail=2, tail_with_replacement=True), seed=2)
    assert dataset.element_spec["x"].shape == (2, 4, S, S, 3)
    overlap = False
    for e in _take(dataset, 12):
        body, tail = set(_ids(e["x"]).ravel()), set(_ids(e["tail_x"]))
        assert len(body) <= 4 and len(tail) <= 2
        assert body | tail <= _task_rows(int(e["task"]))
        overlap |= bool(body & tail)
    assert overlap  # unlike the split, the parts may share examples


@pytest.mark.parametrize("spec, field, message", [
    (dict(shots=4, steps=2, batch=2, tail=4), "meta.foml_tail",
     "meta.foml_tail (4) must be smaller than meta.train_shots (4)"),
    (dict(shots=4, steps=2, batch=5, replacement=True), "meta.inner_batch",
     "meta.inner_batch (5) must be <= meta.train_shots (4) with inner.replacement"),
    (dict(shots=6, steps=2, batch=5, replacement=True, tail=2), "meta.inner_batch",
     "meta.inner_batch (5) must be <= meta.train_shots minus meta.foml_tail (4)"),
    (dict(shots=4, steps=0, batch=2, tail=1), "meta.inner_iters",
     "meta.inner_iters must be positive with meta.foml_tail"),
    (dict(shots=0, steps=2, batch=2), "meta.train_shots", "meta.train_shots must be positive"),
    (dict(shots=4, steps=-1, batch=2), "meta.inner_iters", "meta.inner_iters must be >= 0"),
    (dict(shots=4, steps=2, batch=0), "meta.inner_batch", "meta.inner_batch must be positive"),
    (dict(shots=4, steps=2, batch=2, augment=True, aug_rate=1.5), "inner.aug_rate",
     "inner.aug_rate must be in [0, 1], got 1.5"),
])
def test_episode_spec_errors_carry_the_field(spec, field, message):
    with pytest.raises(FieldError) as info:
        _training(**spec)
    assert info.value.field == field and message in str(info.value), str(info.value)


def test_training_data_errors_name_the_tasks_or_the_field(store):
    with pytest.raises(DataError, match="task3.*--foml-tail"):
        episodes.meta_training_dataset(store, _training(10, 2, 2, tail=6))
    # task3 has 6 examples: a batch of 7 distinct ones fits the 8 shots but not that task
    with pytest.raises(FieldError, match=r"meta.inner_batch \(7\) must be <= the examples of "
                                         r"the smallest task \(6\)") as info:
        episodes.meta_training_dataset(store, _training(8, 2, 7, replacement=True))
    assert info.value.field == "meta.inner_batch"


# ---------------------------------------------------------------- evaluation
def test_evaluation_episode_has_5_disjoint_queries_and_is_fixed_by_seed(store):
    support_x, support_y, query_x, query_y = episodes.evaluation_episode(store, 1, shots=5, seed=3)
    assert support_x.shape == (5, S, S, 3) and query_x.shape == (5, S, S, 3)
    support, query = _ids(support_x, support_y), _ids(query_x, query_y)
    assert len(set(support) | set(query)) == 10 and set(support) | set(query) <= _task_rows(1)
    again = episodes.evaluation_episode(store, 1, shots=5, seed=3)
    np.testing.assert_array_equal(again[2], query_x)
    other_sample = episodes.evaluation_episode(store, 1, shots=5, seed=3, sample=1)
    other_seed = episodes.evaluation_episode(store, 1, shots=5, seed=4)
    assert not np.array_equal(other_sample[2], query_x) or not np.array_equal(other_sample[0], support_x)
    assert not np.array_equal(other_seed[2], query_x) or not np.array_equal(other_seed[0], support_x)


def test_evaluation_queries_are_random_not_the_last_records(store):
    queries = {frozenset(_ids(episodes.evaluation_episode(store, 2, shots=5, seed=s)[2]).tolist())
               for s in range(8)}
    assert len(queries) > 4


def test_evaluation_task_too_small_names_task_and_shots(store):
    with pytest.raises(DataError, match="task3.*--shots"):
        episodes.evaluation_episode(store, 3, shots=5, seed=0)
    with pytest.raises(DataError, match="task3"):
        episodes.evaluation_dataset(store, [0, 3], EpisodeSpec(2, 1, BatchSpec(2)), seed=0)


def test_evaluation_dataset_matches_episodes_and_trains_on_support_only(store):
    dataset = episodes.evaluation_dataset(store, [2, 0, 1], EpisodeSpec(5, 3, BatchSpec(8)),
                                          seed=3, sample=1)
    spec = dataset.element_spec
    assert spec["x"].shape == (3, 8, S, S, 3) and spec["query_y"].shape == (5, S, S, 2)
    elements = _take(dataset, 10)
    assert [int(e["task"]) for e in elements] == [2, 0, 1]
    for e in elements:
        direct = episodes.evaluation_episode(store, int(e["task"]), shots=5, seed=3, sample=1)
        for key, value in zip(("support_x", "support_y", "query_x", "query_y"), direct):
            np.testing.assert_array_equal(e[key], value)
        support = set(_ids(e["support_x"]).tolist())
        batches = _ids(e["x"], e["y"]).reshape(-1)
        assert set(batches.tolist()) == support  # 24 slots walk the 5 support examples
        assert not set(batches.tolist()) & set(_ids(e["query_x"]).tolist())


def test_evaluation_dataset_with_no_inner_steps(store):
    # no inner step, no batch to fill: a batch of 8 distinct examples need not fit 5 shots
    episode = EpisodeSpec(5, 0, BatchSpec(8, replacement=True, augment=True))
    dataset = episodes.evaluation_dataset(store, [0], episode, seed=0)
    (e,) = _take(dataset, 1)
    assert e["x"].shape == (0, 8, S, S, 3) and e["y"].shape == (0, 8, S, S, 2)
    assert e["support_x"].shape == (5, S, S, 3)
