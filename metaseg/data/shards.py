"""The on-disk format: one GZIP TFRecord shard per class (REFERENCE.md section 1).

Each record is a ``tf.train.Example`` with two bytes features, exactly as the original
converter wrote them, so the published FSS-1000 shards load unchanged and shards written
here are readable by the original reader:

- ``image``: raw row-major bytes of a uint8 RGB array ``[S, S, 3]`` (no JPEG/PNG encoding);
- ``mask``: raw bytes of a uint8 array ``[S, S]``, foreground 255, background 0.

The stored size ``S`` is not recorded anywhere; it is inferred from the byte length.

Our converters may add a third, optional bytes feature ``key``: the image's key (UTF-8,
as ``metaseg.data.image_lists`` names images), which ``--train_list`` selects by. The
original reader ignores unknown features, and shards without it (the original's) still
load here; they just cannot be filtered by image.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from metaseg.errors import DataError

PathLike = Union[str, os.PathLike]

SHARD_SUFFIX = ".tfrecord.gzip"
FEATURE_SPEC = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
}
KEY_FEATURE = "key"
# What we parse: the original's two features and, when present, the image key.
_READ_SPEC = {**FEATURE_SPEC, KEY_FEATURE: tf.io.FixedLenFeature([], tf.string,
                                                                  default_value=b"")}
_GZIP = "GZIP"
_BATCH = 1 << 16  # records per tf.data batch: a whole shard in practice
_RESIZE_CHUNK = 256  # examples resized at once: bounds float32 scratch memory


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    """Raise DataError unless image is uint8 [S, S, 3] and mask uint8 [S, S]."""
    if image.dtype != np.uint8 or mask.dtype != np.uint8:
        raise DataError(f"image and mask must be uint8, got {image.dtype} and {mask.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise DataError(f"image must be a square RGB array [S, S, 3], got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask shape {mask.shape} does not match image shape {image.shape}")


def serialize_example(image: np.ndarray, mask: np.ndarray, key: Optional[str] = None) -> bytes:
    """One record of the original format.

    Args:
        image: uint8 [S, S, 3], RGB in [0, 255].
        mask: uint8 [S, S], foreground 255, background 0.
        key: the image's key (non-empty); None writes exactly the original's record.
    Returns:
        A serialised ``tf.train.Example`` with bytes features ``image`` and ``mask`` (and
        ``key`` when given).
    """
    image, mask = np.asarray(image), np.asarray(mask)
    _check_pair(image, mask)
    feature = {"image": _bytes_feature(np.ascontiguousarray(image).tobytes()),
               "mask": _bytes_feature(np.ascontiguousarray(mask).tobytes())}
    if key is not None:
        if not isinstance(key, str) or not key:
            raise DataError(f"an image key must be a non-empty string, got {key!r}")
        feature[KEY_FEATURE] = _bytes_feature(key.encode("utf-8"))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # deterministic: map entries in key order, so equal inputs give byte-identical shards in
    # every process (readers, the original's included, accept either order).
    return example.SerializeToString(deterministic=True)


class ShardWriteError(DataError):
    """The file system refused a write (disk full, quota, read-only, I/O error): fatal for a
    whole conversion, since every further shard would fail the same way."""


def _write_failure(path: str, error: BaseException) -> ShardWriteError:
    """One-line ShardWriteError for an OSError or TensorFlow write error on ``path``."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
    elif isinstance(error, tf.errors.ResourceExhaustedError):  # TF's ENOSPC / EDQUOT
        reason = "no space left on the device (or disk quota exceeded)"
    else:
        reason = _tf_error_detail(error)
    return ShardWriteError(
        f"cannot write {path}: {reason}; free space there or choose another output folder "
        "(no partial file was left; complete shards are kept, and a rerun without "
        "--overwrite keeps them)")


def write_text_atomic(path: PathLike, text: str,
                      failure: Optional[Callable[[str, OSError], Exception]] = None) -> None:
    """Write a small text file (split list, marker, statistics) under a temporary name and
    rename it; on failure no temporary file is left and the error is a ShardWriteError, or
    ``failure(path, os_error)`` (e.g. the checkpoint writer's CheckpointError)."""
    path = os.fspath(path)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise (failure or _write_failure)(path, e) from None
        raise


def write_shard(path: PathLike, pairs: Iterable[Tuple[np.ndarray, ...]],
                overwrite: bool = False) -> int:
    """Write ``(image, mask)`` pairs as one GZIP shard; return how many were written.

    An item may also be ``(image, mask, key)``: the record then carries the image key.

    The shard is written under a hidden temporary name in the same directory and renamed
    into place when complete, so a shard is only ever complete or absent (the temporary
    file is removed on any exception, including KeyboardInterrupt). All pairs must share
    one square size, since readers infer the size from the byte length. A refused write
    (disk full, read-only, I/O error) raises ShardWriteError, one line naming the file.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{path} already exists; pass --overwrite to replace it")
    directory, name = os.path.split(path)
    # Not ending in SHARD_SUFFIX and hidden, so list_tasks never sees an unfinished write.
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    count, shape = 0, None
    try:
        with tf.io.TFRecordWriter(tmp, options=tf.io.TFRecordOptions(compression_type=_GZIP)) as w:
            for item in pairs:
                image, mask = item[0], item[1]
                record = serialize_example(image, mask, item[2] if len(item) > 2 else None)
                if shape is None:
                    shape = np.shape(image)
                elif np.shape(image) != shape:
                    raise DataError(f"{path}: all images of a shard must have one size, "
                                    f"got {np.shape(image)} after {shape}")
                w.write(record)
                count += 1
        if count == 0:
            raise DataError(f"{path}: no examples to write; an empty shard would be unreadable")
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, (OSError, tf.errors.OpError)):
            raise _write_failure(path, e) from None
        raise
    return count


def _tf_error_detail(error: tf.errors.OpError) -> str:
    """The useful part of a TF runtime error message (drops function-node and op tags)."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:.*?\]|name:\s*$|'", "", error.message)
    return " ".join(text.split()) or type(error).__name__


def _read_raw(path: str) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The bytes features of every record: string tensors [n] (keys "" when absent)."""
    dataset = tf.data.TFRecordDataset(path, compression_type=_GZIP).batch(_BATCH)
    images, masks, keys = [], [], []
    try:
        for batch in dataset:  # one iteration for any real shard
            parsed = tf.io.parse_example(batch, _READ_SPEC)
            images.append(parsed["image"])
            masks.append(parsed["mask"])
            keys.append(parsed[KEY_FEATURE])
    except tf.errors.NotFoundError:
        raise DataError(f"{path}: shard not found") from None
    except tf.errors.DataLossError as e:
        raise DataError(f"{path}: shard is truncated or corrupt ({_tf_error_detail(e)}); "
                        "re-download or re-convert it") from None
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as e:
        # TF echoes the undecodable record in its message, which may itself fail to decode.
        detail = _tf_error_detail(e) if isinstance(e, tf.errors.OpError) else "undecodable"
        raise DataError(f"{path}: records are not tf.train.Examples with bytes features "
                        f"'image' and 'mask' ({detail})") from None
    if not images:
        raise _empty_shard_error(path)
    return tf.concat(images, 0), tf.concat(masks, 0), tf.concat(keys, 0)


def _empty_shard_error(path: str) -> DataError:
    return DataError(f"{path}: shard holds no examples; re-convert it or remove it")


def _infer_size(path: str, image_bytes: tf.Tensor, mask_bytes: tf.Tensor) -> int:
    """Side S of the stored images, from byte lengths (image 3*S*S, mask S*S)."""
    image_lengths = np.unique(tf.strings.length(image_bytes).numpy())
    mask_lengths = np.unique(tf.strings.length(mask_bytes).numpy())
    if len(image_lengths) != 1:
        raise DataError(f"{path}: images of different sizes in one shard "
                        f"(byte lengths {image_lengths.tolist()[:5]}); re-convert it")
    length = int(image_lengths[0])
    size = math.isqrt(length // 3)
    if length == 0 or 3 * size * size != length:
        raise DataError(f"{path}: image byte length {length} fits no square uint8 RGB image "
                        "(expected 3*S*S); this is not a shard of the original format")
    if mask_lengths.tolist() != [size * size]:
        raise DataError(f"{path}: mask byte length {mask_lengths.tolist()[:5]} does not match "
                        f"{size}x{size} images (expected {size * size})")
    return size


def _decode(path: str, image_bytes: tf.Tensor, mask_bytes: tf.Tensor, key_bytes: tf.Tensor):
    """(images, masks, keys): keys a list of str, or None if any record has no key."""
    size = _infer_size(path, image_bytes, mask_bytes)
    images = tf.reshape(tf.io.decode_raw(image_bytes, tf.uint8), [-1, size, size, 3])
    masks = tf.reshape(tf.io.decode_raw(mask_bytes, tf.uint8), [-1, size, size])
    keys = [k.decode("utf-8", "replace") for k in key_bytes.numpy().tolist()]
    # np.asarray shares the tensors' memory (read-only); .numpy() would copy the whole task.
    return np.asarray(images), np.asarray(masks), (keys if all(keys) else None)


def read_shard(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Decode one shard.

    Returns:
        images: uint8 [n, S, S, 3] in [0, 255]; masks: uint8 [n, S, S] (foreground 255),
        in file order, as read-only arrays (copy before writing into them). S is inferred
        from the byte length of the records.
    Raises:
        DataError naming the file if it is missing, truncated, CRC-corrupt, empty, or its
        records fit no square image.
    """
    path = os.fspath(path)
    return _decode(path, *_read_raw(path))[:2]


def read_shard_with_keys(path: PathLike) -> Tuple[np.ndarray, np.ndarray, Optional[List[str]]]:
    """``read_shard`` plus the records' image keys (None for a shard written without them)."""
    path = os.fspath(path)
    return _decode(path, *_read_raw(path))


def read_shards(paths: Sequence[PathLike], cycle_length: int = 8,
                with_keys: bool = False) -> List[Tuple]:
    """``[read_shard(p) for p in paths]`` through one interleaved, parallel tf.data pipeline.

    Same results and errors, several times faster for many small shards (FSS-1000: 1000
    shards of 10 examples), where a separate eager pipeline per shard costs more than the
    reading itself. ``with_keys`` gives ``read_shard_with_keys`` triples instead.
    """
    paths = [os.fspath(p) for p in paths]
    one = read_shard_with_keys if with_keys else read_shard
    if len(paths) < 2:
        return [one(p) for p in paths]

    def records(index, path):
        return tf.data.TFRecordDataset(path, compression_type=_GZIP).batch(_BATCH).map(
            lambda batch: (index, tf.io.parse_example(batch, _READ_SPEC)))

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), paths)).interleave(
        records, cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).prefetch(tf.data.AUTOTUNE)
    pieces: Dict[int, list] = {i: [] for i in range(len(paths))}
    try:
        for index, parsed in dataset:
            i = int(index)
            pieces[i].append(_decode(paths[i], parsed["image"], parsed["mask"],
                                     parsed[KEY_FEATURE]))
    except (tf.errors.OpError, UnicodeDecodeError):
        # The pipeline's error does not reliably name the file: re-read the shards one by
        # one, so that the DataError does.
        return [one(p) for p in paths]
    joined = [_join_pieces(paths[i], pieces[i]) for i in range(len(paths))]
    return joined if with_keys else [j[:2] for j in joined]


def _join_pieces(path: str, pieces: list) -> Tuple[np.ndarray, np.ndarray]:
    """One shard's decoded batches (one, unless it holds more than _BATCH records)."""
    if not pieces:
        raise _empty_shard_error(path)
    if len(pieces) == 1:
        return pieces[0]
    if len({p[0].shape[1] for p in pieces}) > 1:
        raise DataError(f"{path}: images of different sizes in one shard; re-convert it")
    keys = None if any(p[2] is None for p in pieces) else [k for p in pieces for k in p[2]]
    return (np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces]),
            keys)


def resize_examples(images: np.ndarray, masks: np.ndarray,
                    image_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resize to ``image_size`` x ``image_size``; a no-op when already that size.

    Args:
        images: uint8 [n, S, S, 3]; masks: uint8 [n, S, S].
    Returns:
        images uint8 [n, s, s, 3] (bilinear, rounded and clipped back to uint8) and masks
        uint8 [n, s, s] (nearest neighbour, so a binary mask stays binary).
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.shape[1:3] == (image_size, image_size):
        return images, masks
    if image_size <= 0:
        raise DataError(f"image_size must be positive, got {image_size}")
    out_images, out_masks = [], []
    for start in range(0, len(images), _RESIZE_CHUNK):
        chunk = slice(start, start + _RESIZE_CHUNK)
        # Antialiasing only changes downscaling (where plain bilinear would alias, e.g.
        # 224 -> 64 px); upscaling is ordinary bilinear interpolation.
        resized = tf.image.resize(images[chunk], [image_size, image_size], "bilinear",
                                  antialias=True)
        out_images.append(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))
        out_masks.append(tf.image.resize(masks[chunk][..., None], [image_size, image_size],
                                         "nearest")[..., 0])
    if not out_images:  # n == 0
        return (np.zeros((0, image_size, image_size, 3), np.uint8),
                np.zeros((0, image_size, image_size), np.uint8))
    return np.asarray(tf.concat(out_images, 0)), np.asarray(tf.concat(out_masks, 0))


def mask_to_two_channel(masks) -> tf.Tensor:
    """uint8 masks [..., H, W] (foreground 255) -> float32 [..., H, W, 2].

    Channel 0 is background ``(255 - m) / 255``, channel 1 foreground ``m / 255``, as the
    original reader built its targets; the channels sum to 1.
    """
    m = tf.cast(masks, tf.float32)
    return tf.stack([(255.0 - m) / 255.0, m / 255.0], axis=-1)


def load_task(path: Union[PathLike, Sequence[PathLike]],
              image_size: int | None = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Read one task (a shard, or several shards concatenated, e.g. a merged FP-k task).

    Args:
        path: a shard path or a list of shard paths.
        image_size: resize to this side; None keeps the stored size (which must then be
            the same in every shard).
    Returns:
        images: float32 [n, S, S, 3] in [0, 255] (not rescaled, as the original);
        masks: float32 [n, S, S, 2], channel 0 background, channel 1 foreground.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise DataError("load_task needs at least one shard path")
    parts = [read_shard(p) for p in paths]
    sizes = {images.shape[1] for images, _ in parts}
    if image_size is None and len(sizes) > 1:
        raise DataError(f"shards {[os.fspath(p) for p in paths]} store different image sizes "
                        f"{sorted(sizes)}; pass image_size to resize them to one")
    if image_size is not None:
        parts = [resize_examples(images, masks, image_size) for images, masks in parts]
    images = np.concatenate([images for images, _ in parts])
    masks = np.concatenate([masks for _, masks in parts])
    return tf.cast(tf.constant(images), tf.float32), mask_to_two_channel(masks)
