"""The review order: estimated IoU from a scores.csv where there is one (the quality
estimator's hook), else mask confidence; lowest first, unscored last."""
import numpy as np
import pytest

from metaseg.app import review


def test_mask_confidence_is_the_mean_certainty():
    assert review.mask_confidence(np.array([[0.0, 1.0], [0.5, 0.75]])) == pytest.approx(
        (1 + 1 + 0 + 0.5) / 4)


def test_order_by_confidence_then_by_estimated_iou_from_scores_csv(tmp_path):
    names = ["a.jpg", "b.png", "c.jpg", "d.jpg"]
    confidence = {"a.jpg": 0.9, "b.png": 0.2, "c.jpg": 0.5}
    scores = tmp_path / review.SCORES_FILE
    rows = review.order(names, confidence, str(scores))
    assert [r["name"] for r in rows] == ["b.png", "c.jpg", "a.jpg", "d.jpg"]
    assert {r["score_kind"] for r in rows} == {review.CONFIDENCE} and rows[-1]["score"] is None
    scores.write_text("file,estimated_iou,low,high\n"
                      "masks/a.png,0.1,0.0,0.3\nb.png,0.8,0.6,0.9\nc.jpg,0.4,0.2,0.6\n")
    rows = review.order(names, confidence, str(scores))
    assert [(r["name"], r["score"]) for r in rows] == [
        ("a.jpg", 0.1), ("c.jpg", 0.4), ("b.png", 0.8), ("d.jpg", None)]
    assert rows[0]["score_kind"] == review.ESTIMATED_IOU
