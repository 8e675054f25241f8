"""The six mask-aware augmentations of REFERENCE.md section 3, as stateless TensorFlow ops.

Every function works on one example: ``image`` float32 ``[S, S, 3]`` in [0, 255] and
``mask`` float32 ``[S, S, 2]`` one-hot (channel 0 background, channel 1 foreground). The
mask is transformed through its foreground channel and rebuilt as ``[1 - fg, fg]``, so it
stays one-hot whatever the transform does. Randomness comes only from stateless ops keyed
by ``seed`` (int32/int64 ``[2]``), so a result is a pure function of its inputs and seed.

Each transform exists twice: with explicit parameters (``erase``, ``translate``, ...,
testable by hand) and as ``random_*`` drawing those parameters from a seed with the
original's distributions (mliis ``augmenters/np_augmenters.py``).
"""

from __future__ import annotations

import functools
import math
import numbers

import tensorflow as tf

# Pin the generator so a seed means the same numbers on every device (resume is bit-exact).
ALG = "philox"
NUM_TRANSFORMS = 6
MAX_SHIFT = 23  # translation range 1-23 px
MAX_ANGLE = 45.0  # rotation range +/- 45 degrees


def as_seed(seed) -> tf.Tensor:
    """An integer (-> ``[seed, 0]``) or an int ``[2]`` tensor/array -> int64 ``[2]`` seed."""
    if isinstance(seed, numbers.Integral):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def split_seed(seed, num: int) -> tf.Tensor:
    """``num`` independent int64 ``[num, 2]`` seeds derived from ``seed``."""
    return tf.random.experimental.stateless_split(as_seed(seed), num, alg=ALG)


def fold_seed(seed, data) -> tf.Tensor:
    """The seed for item ``data`` (int scalar) of the stream keyed by ``seed``: int64 ``[2]``."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), tf.cast(data, tf.int64), alg=ALG)


def _uniform(seed, minval=0.0, maxval=1.0, shape=(), dtype=tf.float32):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype, alg=ALG)


def _coin(seed) -> tf.Tensor:
    return _uniform(seed) < 0.5


def _foreground(mask):
    return mask[..., 1:2]


def _one_hot(fg):
    return tf.concat([1.0 - fg, fg], axis=-1)


def _clip(image):
    return tf.clip_by_value(image, 0.0, 255.0)


def _axes(image):
    """int32 row indices ``[S, 1, 1]`` and column indices ``[1, S, 1]`` of an image.

    1-D ranges that broadcast: full-size index grids cost as much as the transforms.
    """
    size = tf.shape(image)
    return tf.range(size[0])[:, None, None], tf.range(size[1])[None, :, None]


# ---------------------------------------------------------------- 1. random erasing
def erase(image, mask, top, left, height, width, value):
    """Set the box ``[top:top+height, left:left+width]`` to ``value`` (all channels) and background."""
    rows, cols = _axes(image)
    inside = ((rows >= top) & (rows < top + height)) & ((cols >= left) & (cols < left + width))
    image = tf.where(inside, tf.cast(value, tf.float32), image)
    return image, _one_hot(tf.where(inside, 0.0, _foreground(mask)))


def random_erase(image, mask, seed):
    """Erase a box of 2-10 % of the area, aspect (h/w) 0.3-3.3, with one value in [0, 255].

    Departure: the original let the box start anywhere and cut it at the border, so the area
    actually erased was often well under 2 %; here the box is placed to fit inside.
    """
    s = split_seed(seed, 5)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    area = _uniform(s[0], 0.02, 0.10) * size[0] * size[1]
    aspect = _uniform(s[1], 0.3, 1.0 / 0.3)
    height = tf.clip_by_value(tf.floor(tf.sqrt(area * aspect)), 1.0, size[0])
    width = tf.clip_by_value(tf.floor(tf.sqrt(area / aspect)), 1.0, size[1])
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    top = _uniform(s[2], 0, tf.shape(image)[0] - height + 1, dtype=tf.int32)
    left = _uniform(s[3], 0, tf.shape(image)[1] - width + 1, dtype=tf.int32)
    return erase(image, mask, top, left, height, width, _uniform(s[4], 0.0, 255.0))


# ---------------------------------------------------------------- 2. translation
def translate(image, mask, shift, vertical, fill, colour):
    """Roll by ``shift`` px (signed, non-zero) along rows (``vertical``) or columns.

    With ``fill`` the pixels that wrapped round are replaced by ``colour`` (float32 ``[3]``)
    and become background; otherwise the image is simply rolled (``np.roll``).
    """
    shift = tf.cast(shift, tf.int32)
    vertical, fill = tf.cast(vertical, tf.bool), tf.cast(fill, tf.bool)
    axis = tf.where(vertical, 0, 1)
    rows, cols = _axes(image)
    extent = tf.shape(image)[axis]

    def strip(coord):  # the indices the roll wrapped round
        return tf.where(shift > 0, coord < shift, coord >= extent + shift)

    gap = ((strip(rows) & vertical) | (strip(cols) & ~vertical)) & fill
    image = tf.where(gap, tf.cast(colour, tf.float32), tf.roll(image, shift, axis))
    fg = tf.where(gap, 0.0, tf.roll(_foreground(mask), shift, axis))
    return image, _one_hot(fg)


def random_translate(image, mask, seed):
    """Shift 1-23 px up/down/left/right; roll or fill with a random colour (each at 1/2).

    The original mixed up its axes (rolled along one, filled along the other); here the
    gap is always the strip the roll wrapped round.
    """
    s = split_seed(seed, 5)
    max_shift = tf.minimum(MAX_SHIFT, tf.shape(image)[0] - 1)
    magnitude = _uniform(s[0], 1, max_shift + 1, dtype=tf.int32)
    shift = tf.where(_coin(s[1]), magnitude, -magnitude)
    colour = _uniform(s[4], 0.0, 255.0, shape=[3])
    return translate(image, mask, shift, _coin(s[2]), _coin(s[3]), colour)


# ---------------------------------------------------------------- 3. horizontal flip
def flip_horizontal(image, mask, seed=None):
    """Mirror left-right (reverse the column axis). ``seed`` is unused (uniform signature)."""
    del seed
    return tf.reverse(image, [1]), tf.reverse(mask, [1])


# ---------------------------------------------------------------- 4. Gaussian noise
def add_gaussian_noise(image, mask, sd, seed):
    """Add independent N(0, sd^2) noise to every pixel and channel, then clip to [0, 255]."""
    noise = tf.random.stateless_normal(tf.shape(image), as_seed(seed), 0.0, sd, alg=ALG)
    return _clip(image + noise), mask


def random_gaussian_noise(image, mask, seed):
    """Additive noise with sd = |N(5.1, 1)| (the original's 'sd drawn near 5')."""
    s = split_seed(seed, 2)
    sd = tf.abs(tf.random.stateless_normal([], s[0], 5.1, 1.0, alg=ALG))
    return add_gaussian_noise(image, mask, sd, s[1])


# ---------------------------------------------------------------- 5. exposure
def adjust_exposure(image, mask, offset):
    """Add one global ``offset`` to every pixel and channel, then clip to [0, 255]."""
    return _clip(image + offset), mask


def random_exposure(image, mask, seed):
    """Global offset ~ N(0, sd^2) with sd = |N(12.75, 1)| (the original's 'near 13')."""
    s = split_seed(seed, 2)
    sd = tf.abs(tf.random.stateless_normal([], s[0], 12.75, 1.0, alg=ALG))
    return adjust_exposure(image, mask, tf.random.stateless_normal([], s[1], 0.0, sd, alg=ALG))


# ---------------------------------------------------------------- 6. rotation
def _rotation_transform(angle_degrees, size):
    """Projective transform (output -> input coordinates) rotating about the image centre."""
    theta = tf.cast(angle_degrees, tf.float32) * (math.pi / 180.0)
    c, s = tf.cos(theta), tf.sin(theta)
    h, w = tf.cast(size[0] - 1, tf.float32), tf.cast(size[1] - 1, tf.float32)
    dx = (w - (c * w - s * h)) / 2.0
    dy = (h - (s * w + c * h)) / 2.0
    return tf.stack([c, -s, dx, s, c, dy, 0.0, 0.0])[None]


def _warp(images, transform, interpolation, fill_mode):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images[None], transforms=transform, output_shape=tf.shape(images)[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode)[0]


def rotate(image, mask, angle, fill_mode="reflect", fill=0.0):
    """Rotate by ``angle`` degrees (counter-clockwise as displayed) about the centre.

    ``fill_mode``: "reflect", "wrap" or "constant" (border filled with ``fill``, a value
    or float32 ``[S, S, 3]`` image, and background in the mask). Images bilinear, masks
    nearest-neighbour. The result is clipped to [0, 255]: the original forgot to clip
    after rotating (REFERENCE.md section 11); we fix that.
    """
    mode = fill_mode.upper()
    transform = _rotation_transform(angle, tf.shape(image)[:2])
    out = _warp(image, transform, "BILINEAR", mode)
    if mode == "CONSTANT":
        # Warp a map of ones the same way: 1 - coverage is exactly the weight bilinear
        # interpolation gives to the outside, so the border blends into `fill` smoothly.
        coverage = _warp(tf.ones_like(image[..., :1]), transform, "BILINEAR", mode)
        out += (1.0 - coverage) * tf.cast(fill, tf.float32)
    fg = _warp(_foreground(mask), transform, "NEAREST", mode)  # outside -> 0 = background
    return _clip(out), _one_hot(fg)


def random_rotate(image, mask, seed):
    """Rotate by U(-45, 45) degrees (the original: whole degrees) with a border mode drawn
    from reflect/constant/mirror/wrap.

    scipy's "mirror" (d c b | a b c d) has no TF fill mode; the nearest is REFLECT
    (d c b a | a b c d, scipy's "reflect"), so REFLECT is drawn half the time. In constant
    mode the border is, at 1/2 each, one random grey value or uniform noise, as in the original.
    """
    s = split_seed(seed, 5)
    angle = _uniform(s[0], -MAX_ANGLE, MAX_ANGLE)
    mode = _uniform(s[1], 0, 4, dtype=tf.int32)

    def constant():
        noise = tf.floor(_uniform(s[3], 0.0, 256.0, shape=tf.shape(image)))
        grey = tf.floor(_uniform(s[4], 0.0, 256.0))
        return rotate(image, mask, angle, "constant", tf.where(_coin(s[2]), noise, grey))

    branch = tf.gather([0, 1, 0, 2], mode)  # reflect, constant, mirror -> reflect, wrap
    return tf.switch_case(branch, [lambda: rotate(image, mask, angle, "reflect"), constant,
                                   lambda: rotate(image, mask, angle, "wrap")])


# ---------------------------------------------------------------- composition
# Order fixes the meaning of a plan's indices (the original's list order).
RANDOM_TRANSFORMS = (random_erase, random_translate, flip_horizontal, random_gaussian_noise,
                     random_exposure, random_rotate)


def augmentation_plan(seed):
    """Which transforms to apply, in which order: (order int32 ``[6]``, count int32 in 1-6).

    As the original: shuffle the six, apply the first ``count`` with ``count`` uniform in
    1-6 (so a non-empty subset in random order; subset sizes equally likely).
    """
    s = split_seed(seed, 2)
    order = tf.argsort(_uniform(s[0], shape=[NUM_TRANSFORMS]))
    return tf.cast(order, tf.int32), _uniform(s[1], 1, NUM_TRANSFORMS + 1, dtype=tf.int32)


def augment_example(image, mask, seed):
    """Apply a random non-empty subset of the six transforms in random order.

    Args: image float32 [S, S, 3] in [0, 255]; mask float32 [S, S, 2] one-hot; seed int [2].
    Returns: (image float32 [S, S, 3] in [0, 255], mask float32 [S, S, 2] one-hot).
    """
    s = split_seed(seed, NUM_TRANSFORMS + 1)
    order, count = augmentation_plan(s[0])

    # One loop over the first `count` positions, one switch on the transform there: traced
    # once (an unrolled loop would trace every transform six times).
    def step(i, image, mask):
        branches = [functools.partial(fn, image, mask, s[i + 1]) for fn in RANDOM_TRANSFORMS]
        image, mask = tf.switch_case(order[i], branches)
        return i + 1, image, mask

    _, image, mask = tf.while_loop(lambda i, *_: i < count, step, (tf.constant(0), image, mask),
                                   maximum_iterations=NUM_TRANSFORMS)
    return _clip(image), mask


def maybe_augment(image, mask, seed, aug_rate):
    """With probability ``aug_rate`` (float in [0, 1]) ``augment_example``, else unchanged."""
    s = split_seed(seed, 2)
    return tf.cond(_uniform(s[0]) < aug_rate,
                   lambda: augment_example(image, mask, s[1]),
                   lambda: (image, mask))


def maybe_augment_batch(images, masks, seed, aug_rate):
    """``maybe_augment`` each example of a batch with its own seed.

    Args: images float32 [N, S, S, 3] in [0, 255]; masks float32 [N, S, S, 2] one-hot;
    seed int [2]; aug_rate float in [0, 1]. Returns tensors of the same shapes.
    """
    return maybe_augment_each(images, masks, split_seed(seed, tf.shape(images)[0]), aug_rate)


def maybe_augment_each(images, masks, seeds, aug_rate):
    """``maybe_augment`` example i of a batch with ``seeds[i]`` (int64 [N, 2]): any slice of
    a batch gives the same examples as the whole batch does."""
    spec = (tf.TensorSpec(images.shape[1:], tf.float32), tf.TensorSpec(masks.shape[1:], tf.float32))
    return tf.map_fn(lambda args: maybe_augment(*args, aug_rate), (images, masks, seeds),
                     fn_output_signature=spec)
