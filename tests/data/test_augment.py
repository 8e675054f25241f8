"""The six mask-aware augmentations, each checked against a hand-computed expectation."""
import numpy as np
import pytest
import tensorflow as tf

from metaseg.data import augment as aug

S = 32


def _image(seed=0, size=S, low=20.0, high=235.0):
    return np.random.default_rng(seed).uniform(low, high, (size, size, 3)).astype(np.float32)


def _mask(seed=0, size=S, fg=None):
    if fg is None:
        fg = np.random.default_rng(seed + 100).integers(0, 2, (size, size))
    fg = np.broadcast_to(fg, (size, size)).astype(np.float32)
    return np.stack([1.0 - fg, fg], axis=-1)


def _seed(i):
    return tf.constant([i, 17], tf.int64)


def _assert_one_hot(mask):
    mask = np.asarray(mask)
    assert np.all((mask == 0.0) | (mask == 1.0))
    np.testing.assert_array_equal(mask.sum(-1), 1.0)


def _changed_mask_box(before, after):
    """Rows/cols bounding the pixels whose foreground changed, and whether they fill the box."""
    rows, cols = np.nonzero(before[..., 1] != after[..., 1])
    box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    filled = len(rows) == (box[1] - box[0]) * (box[3] - box[2])
    return box, filled


# ---------------------------------------------------------------- erasing
def test_erase_sets_box_to_value_and_background():
    image, mask = _image(), _mask()
    out, out_mask = aug.erase(image, mask, 3, 5, 4, 6, 99.0)
    expected, expected_mask = image.copy(), mask.copy()
    expected[3:7, 5:11] = 99.0
    expected_mask[3:7, 5:11] = [1.0, 0.0]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out_mask, expected_mask)


@pytest.mark.parametrize("i", range(8))
def test_random_erase_is_one_constant_box_of_2_to_10_percent(i):
    size = 64
    image, mask = _image(i, size), _mask(size=size, fg=1)
    out, out_mask = (np.asarray(t) for t in aug.random_erase(image, mask, _seed(i)))
    (r0, r1, c0, c1), filled = _changed_mask_box(mask, out_mask)
    assert filled  # a solid rectangle, inside the image
    area = (r1 - r0) * (c1 - c0) / size**2
    # 2-10 % before flooring the sides to whole pixels (which loses at most ~0.5 % here).
    assert 0.014 <= area <= 0.10
    assert 0.2 <= (r1 - r0) / (c1 - c0) <= 5.0
    box = out[r0:r1, c0:c1]
    assert np.all(box == box[0, 0, 0]) and 0.0 <= box[0, 0, 0] <= 255.0
    outside = np.ones((size, size), bool)
    outside[r0:r1, c0:c1] = False
    np.testing.assert_array_equal(out[outside], image[outside])


# ---------------------------------------------------------------- translation
@pytest.mark.parametrize("shift,vertical", [(5, True), (-7, False), (23, False), (-1, True)])
def test_translate_roll_is_np_roll(shift, vertical):
    image, mask = _image(), _mask()
    out, out_mask = aug.translate(image, mask, shift, vertical, False, [0.0, 0.0, 0.0])
    axis = 0 if vertical else 1
    np.testing.assert_array_equal(out, np.roll(image, shift, axis))
    np.testing.assert_array_equal(out_mask, np.roll(mask, shift, axis))


@pytest.mark.parametrize("shift,vertical", [(4, True), (-6, True), (3, False), (-9, False)])
def test_translate_fill_paints_the_wrapped_strip(shift, vertical):
    image, mask = _image(), _mask()
    colour = np.array([10.0, 200.0, 30.0], np.float32)
    out, out_mask = aug.translate(image, mask, shift, vertical, True, colour)
    axis = 0 if vertical else 1
    expected, expected_mask = np.roll(image, shift, axis), np.roll(mask, shift, axis)
    strip = slice(0, shift) if shift > 0 else slice(S + shift, S)
    index = (strip, slice(None)) if vertical else (slice(None), strip)
    expected[index] = colour
    expected_mask[index] = [1.0, 0.0]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out_mask, expected_mask)


def _explain_translation(image, mask, out, out_mask):
    """(shift, axis, filled) such that out is a roll of image, possibly with a filled strip."""
    for axis in (0, 1):
        for shift in [s for k in range(1, 24) for s in (k, -k)]:
            rolled, rolled_mask = np.roll(image, shift, axis), np.roll(mask, shift, axis)
            strip = slice(0, shift) if shift > 0 else slice(S + shift, S)
            keep = np.ones((S, S), bool)
            keep[(strip, slice(None)) if axis == 0 else (slice(None), strip)] = False
            if not (np.array_equal(out[keep], rolled[keep])
                    and np.array_equal(out_mask[keep], rolled_mask[keep])):
                continue
            if np.array_equal(out, rolled) and np.array_equal(out_mask, rolled_mask):
                return shift, axis, False
            gap, gap_mask = out[~keep], out_mask[~keep]
            if np.all(gap == gap[0]) and np.all(gap_mask == [1.0, 0.0]):
                return shift, axis, True
    return None


def test_random_translate_shifts_1_to_23_px_along_one_axis_both_modes():
    image, mask = _image(), _mask()
    seen = set()
    for i in range(24):
        out, out_mask = (np.asarray(t) for t in aug.random_translate(image, mask, _seed(i)))
        found = _explain_translation(image, mask, out, out_mask)
        assert found is not None, f"seed {i}: not a 1-23 px translation"
        seen.add((found[1], found[2], found[0] > 0))
    assert {s[1] for s in seen} == {False, True}  # rolled and filled
    assert {s[0] for s in seen} == {0, 1}  # both axes
    assert {s[2] for s in seen} == {False, True}  # both directions


# ---------------------------------------------------------------- flip, noise, exposure
def test_flip_horizontal_reverses_columns():
    image, mask = _image(), _mask()
    out, out_mask = aug.flip_horizontal(image, mask, _seed(0))
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_gaussian_noise_has_the_given_sd_and_keeps_the_mask():
    image, mask = np.full((64, 64, 3), 128.0, np.float32), _mask(size=64)
    out, out_mask = aug.add_gaussian_noise(image, mask, 5.0, _seed(3))
    residual = np.asarray(out) - 128.0
    assert abs(residual.mean()) < 0.3 and 4.7 < residual.std() < 5.3
    np.testing.assert_array_equal(out_mask, mask)


def test_gaussian_noise_and_exposure_clip_to_0_255():
    image = np.concatenate([np.zeros((S, S // 2, 3)), np.full((S, S // 2, 3), 255.0)], 1)
    image = image.astype(np.float32)
    out, _ = aug.add_gaussian_noise(image, _mask(), 30.0, _seed(1))
    assert np.asarray(out).min() == 0.0 and np.asarray(out).max() == 255.0
    up, _ = aug.adjust_exposure(image, _mask(), 40.0)
    np.testing.assert_array_equal(up, np.clip(image + 40.0, 0, 255))


def test_random_noise_sd_is_drawn_near_5():
    image, mask = np.full((64, 64, 3), 128.0, np.float32), _mask(size=64)
    sds = [np.std(np.asarray(aug.random_gaussian_noise(image, mask, _seed(i))[0]) - 128.0)
           for i in range(12)]
    assert all(1.0 < sd < 10.0 for sd in sds)  # |N(5.1, 1)|, within 4 sd
    assert 4.0 < np.mean(sds) < 6.2
    assert len(set(np.round(sds, 3))) == len(sds)  # sd itself is random


def test_random_exposure_adds_one_global_offset():
    image, mask = _image(), _mask()
    offsets = []
    for i in range(16):
        out, out_mask = aug.random_exposure(image, mask, _seed(i))
        diff = np.asarray(out) - image
        inside = (image + diff.flat[0] > 0) & (image + diff.flat[0] < 255)
        np.testing.assert_allclose(diff[inside], diff.flat[0], atol=1e-4)
        np.testing.assert_array_equal(out_mask, mask)
        offsets.append(diff.flat[0])
    assert 3.0 < np.std(offsets) < 30.0  # N(0, sd^2) with sd near 13


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant"])
def test_rotate_by_zero_is_identity(mode):
    image, mask = _image(), _mask()
    out, out_mask = aug.rotate(image, mask, 0.0, mode, 7.0)
    np.testing.assert_allclose(out, image, atol=1e-3)
    np.testing.assert_array_equal(out_mask, mask)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_rotate_by_90_is_rot90(mode):
    image, mask = _image(), _mask()
    out, out_mask = aug.rotate(image, mask, 90.0, mode, 7.0)
    np.testing.assert_allclose(out, np.rot90(image), atol=1e-2)
    np.testing.assert_array_equal(out_mask, np.rot90(mask))


def test_rotate_wrap_by_90_is_rot90_inside_the_border():
    # At exactly 90 degrees float error puts edge samples a hair outside, where TF's wrap
    # picks the opposite edge; inside the one-pixel border the result is exact.
    image, mask = _image(), _mask()
    out, out_mask = aug.rotate(image, mask, 90.0, "wrap")
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(np.asarray(out)[inner], np.rot90(image)[inner], atol=1e-2)
    np.testing.assert_array_equal(np.asarray(out_mask)[inner], np.rot90(mask)[inner])


def test_rotate_constant_fills_corners_with_fill_and_background():
    image, mask = _image(), _mask(fg=1)
    out, out_mask = (np.asarray(t) for t in aug.rotate(image, mask, 45.0, "constant", 7.0))
    for r, c in [(0, 0), (0, S - 1), (S - 1, 0), (S - 1, S - 1)]:
        np.testing.assert_allclose(out[r, c], 7.0, atol=1e-4)
        np.testing.assert_array_equal(out_mask[r, c], [1.0, 0.0])
    np.testing.assert_array_equal(out_mask[S // 2, S // 2], [0.0, 1.0])
    _assert_one_hot(out_mask)


@pytest.mark.parametrize("mode", ["reflect", "wrap"])
def test_rotate_reflect_and_wrap_leave_no_empty_border(mode):
    _, out_mask = aug.rotate(_image(), _mask(fg=1), 45.0, mode)
    np.testing.assert_array_equal(out_mask, _mask(fg=1))  # all foreground stays foreground


def test_rotate_clips_to_0_255():
    # The original did not clip after rotating (REFERENCE.md section 11).
    image = _image(low=-100.0, high=400.0)
    out, _ = aug.rotate(image, _mask(), 30.0, "reflect")
    assert np.asarray(out).min() >= 0.0 and np.asarray(out).max() <= 255.0
    assert np.asarray(out).max() == 255.0


def test_random_rotate_uses_filled_and_unfilled_borders():
    image, mask = _image(), _mask(fg=1)
    corner_background = []
    for i in range(16):
        out, out_mask = (np.asarray(t) for t in aug.random_rotate(image, mask, _seed(i)))
        _assert_one_hot(out_mask)
        assert 0.0 <= out.min() and out.max() <= 255.0
        corner_background.append(out_mask[0, 0, 0] == 1.0 or out_mask[-1, -1, 0] == 1.0)
    assert any(corner_background) and not all(corner_background)


# ---------------------------------------------------------------- composition
def test_augmentation_plan_is_a_permutation_and_a_count_from_1_to_6():
    counts, firsts = set(), set()
    for i in range(120):
        order, count = aug.augmentation_plan(_seed(i))
        assert sorted(order.numpy().tolist()) == list(range(6))
        counts.add(int(count))
        firsts.add(int(order[0]))
    assert counts == set(range(1, 7)) and firsts == set(range(6))


@tf.function(reduce_retracing=True)
def _augment_graph(image, mask, seed):
    return aug.augment_example(image, mask, seed)


def test_augment_example_keeps_shapes_range_and_one_hot_masks():
    image, mask = _image(), _mask()
    for i in range(10):
        out, out_mask = _augment_graph(image, mask, _seed(i))
        assert out.shape == image.shape and out_mask.shape == mask.shape
        assert out.dtype == tf.float32 and out_mask.dtype == tf.float32
        assert 0.0 <= np.min(out) and np.max(out) <= 255.0
        _assert_one_hot(out_mask)
        assert not np.array_equal(out, image)


def test_augment_example_is_a_pure_function_of_the_seed_in_eager_and_graph():
    image, mask = _image(), _mask()
    first = _augment_graph(image, mask, _seed(5))
    again = _augment_graph(image, mask, _seed(5))
    eager = aug.augment_example(image, mask, _seed(5))
    other = _augment_graph(image, mask, _seed(6))
    for a, b, c in zip(first, again, eager):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[0], other[0])


@tf.function(reduce_retracing=True)
def _augment_batch(images, masks, seed, rate):
    return aug.maybe_augment_batch(images, masks, seed, rate)


def _batch(n):
    return (np.stack([_image(i) for i in range(n)]), np.stack([_mask(i) for i in range(n)]))


def _changed(images, out):
    return [not np.array_equal(a, b) for a, b in zip(images, np.asarray(out))]


def test_aug_rate_0_is_identity_and_1_always_augments():
    images, masks = _batch(24)
    out, out_masks = _augment_batch(images, masks, _seed(0), 0.0)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(out_masks, masks)
    out, out_masks = _augment_batch(images, masks, _seed(0), 1.0)
    assert all(_changed(images, out))
    _assert_one_hot(out_masks)


def test_aug_rate_half_augments_about_half_independently():
    images, masks = _batch(96)
    out, _ = _augment_batch(images, masks, _seed(1), 0.5)
    changed = _changed(images, out)
    assert 0.3 < np.mean(changed) < 0.7  # binomial(96, 0.5): 4 sd either side
    out2, _ = _augment_batch(images, masks, _seed(2), 0.5)
    assert _changed(images, out2) != changed  # the draw depends on the seed


def test_maybe_augment_single_example():
    image, mask = _image(), _mask()
    same = aug.maybe_augment(image, mask, _seed(0), 0.0)
    np.testing.assert_array_equal(same[0], image)
    changed = aug.maybe_augment(image, mask, _seed(0), 1.0)
    assert not np.array_equal(changed[0], image)
