"""Scores of the PASCAL-5i / COCO-20i literature, accumulated over a fold's episodes.

- **mIoU** (Shaban et al. 2017; PANet, PFENet, HSNet): for each class, the intersections
  and unions of predicted and true foreground are summed over *all* query images of all
  its episodes, the class IoU is ``sum(I) / sum(U)``, and mIoU is the mean over the fold's
  classes. Large and small objects weigh by their pixels, unlike our per-image IoU.
- **FB-IoU**: the same accumulation for the foreground and for the background over all
  episodes of all classes together; FB-IoU is the mean of the two IoUs.
- Next to them, ``mean_image_iou``: our per-image score (REFERENCE.md section 7,
  ``(|P and L| + 1e-7) / (|P or L| + 1e-7)``) averaged over every query image.

A fold class that no episode scored is left out of mIoU (with a warning), as is a class
whose accumulated union is zero (nothing predicted and nothing to find), so a metric is
never divided by zero; ``summary`` says how many classes entered the mean.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
from absl import logging

from metaseg.errors import ConfigError

IOU_EPSILON = 1e-7


def to_binary(masks: np.ndarray) -> np.ndarray:
    """bool [N, H, W] foreground from either a binary/0-1 array [N, H, W] (or [H, W]) or
    two-channel probabilities/targets [N, H, W, 2] (channel 1 rounded, as ``binary_iou``)."""
    masks = np.asarray(masks)
    if masks.ndim == 4:
        if masks.shape[-1] != 2:
            raise ValueError(f"expected [N, H, W, 2] two-channel masks, got {masks.shape}")
        masks = np.round(masks[..., 1])
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"expected masks [N, H, W] or [N, H, W, 2], got {masks.shape}")
    return masks > 0.5


class FoldMetrics:
    """Accumulator of intersections and unions per class and for foreground/background.

    Args:
        class_names: the fold's classes (e.g. the 5 test classes of a PASCAL-5i fold).
    """

    def __init__(self, class_names: Sequence[str]):
        if not class_names:
            raise ConfigError("a fold needs at least one class to score")
        self.class_names = tuple(dict.fromkeys(class_names))
        self.intersection = {c: 0 for c in self.class_names}
        self.union = {c: 0 for c in self.class_names}
        self.episodes = {c: 0 for c in self.class_names}
        self.fg = np.zeros(2, np.int64)  # [intersection, union] of the foreground
        self.bg = np.zeros(2, np.int64)  # the same for the background
        self.image_ious = []

    def add(self, class_name: str, predictions, labels) -> None:
        """Score one episode's query set.

        Args:
            class_name: the episode's class (one of ``class_names``).
            predictions, labels: the query images' foreground, each bool/0-1 [N, H, W] or
                two-channel [N, H, W, 2] (channel 1 foreground, rounded at 0.5).
        """
        if class_name not in self.intersection:
            raise ConfigError(f"class {class_name!r} is not one of the fold's classes "
                              f"{list(self.class_names)}")
        pred, true = to_binary(predictions), to_binary(labels)
        if pred.shape != true.shape:
            raise ValueError(f"predictions {pred.shape} and labels {true.shape} differ in shape")
        inter = np.sum(pred & true, axis=(1, 2), dtype=np.int64)
        union = np.sum(pred | true, axis=(1, 2), dtype=np.int64)
        self.intersection[class_name] += int(inter.sum())
        self.union[class_name] += int(union.sum())
        self.episodes[class_name] += 1
        self.fg += [inter.sum(), union.sum()]
        self.bg += [np.sum(~pred & ~true), np.sum(~pred | ~true)]
        self.image_ious.extend(((inter + IOU_EPSILON) / (union + IOU_EPSILON)).tolist())

    def class_iou(self) -> Dict[str, float]:
        """{class: accumulated IoU}; NaN for a class never scored or with zero union."""
        return {c: self.intersection[c] / self.union[c] if self.union[c] else math.nan
                for c in self.class_names}

    def miou(self, warn: bool = True) -> float:
        """Mean of the class IoUs over the classes that have one (NaN if none); ``warn``
        logs the fold classes no episode scored."""
        scores = [v for v in self.class_iou().values() if not math.isnan(v)]
        unseen = [c for c in self.class_names if not self.episodes[c]]
        if unseen and warn:
            logging.warning("mIoU leaves out %d fold classes no episode scored: %s",
                            len(unseen), ", ".join(unseen))
        return float(np.mean(scores)) if scores else math.nan

    def fb_iou(self) -> float:
        """Mean of the accumulated foreground IoU and background IoU (NaN before any episode)."""
        if not self.fg[1] and not self.bg[1]:
            return math.nan
        ious = [inter / union for inter, union in (self.fg, self.bg) if union]
        return float(np.mean(ious))

    def mean_image_iou(self) -> float:
        """Our per-image IoU averaged over every query image scored (NaN if none)."""
        return float(np.mean(self.image_ious)) if self.image_ious else math.nan

    def summary(self) -> dict:
        """JSON-able: mIoU, FB-IoU, mean per-image IoU, class IoUs and episode counts."""
        class_iou = self.class_iou()
        return {"mIoU": self.miou(), "FB-IoU": self.fb_iou(),
                "mean_image_IoU": self.mean_image_iou(),
                "classes_in_mIoU": sum(not math.isnan(v) for v in class_iou.values()),
                "class_IoU": class_iou, "episodes": dict(self.episodes)}
