"""A slow, obviously correct RSNA metric, written straight from its definition.

Shared by the tests and ``bench/metric.py`` as the yardstick for :mod:`tfod.scoring.metric`. Plain
Python loops, one image, one threshold, one prediction at a time. Only the IoU follows the
same float operations as :func:`tfod.boxes.pairwise_iou_xywh` (corners first, areas from the
corners), so that an IoU landing exactly on a threshold is decided the same way by both.
"""
from __future__ import annotations

THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)


def iou(a, b) -> float:
    """IoU of two pixel ``x, y, w, h`` boxes; 0 when the union is empty."""
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    overlap_w = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    overlap_h = max(min(ay2, by2) - max(ay1, by1), 0.0)
    intersection = overlap_w * overlap_h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - intersection
    return intersection / union if union > 0 else 0.0


def image_score(truth, predicted, scores, min_score=0.0):
    """One image's score (mean over thresholds of TP/(TP+FP+FN)); None if it is left out."""
    kept = [k for k in range(len(predicted)) if scores[k] >= min_score]
    order = sorted(kept, key=lambda k: -scores[k])  # stable: equal scores keep input order
    if not truth and not order:
        return None
    total = 0.0
    for threshold in THRESHOLDS:
        unmatched = list(range(len(truth)))
        tp = 0
        for k in order:
            best, best_iou = None, None
            for g in unmatched:
                value = iou(predicted[k], truth[g])
                if best_iou is None or value > best_iou:
                    best, best_iou = g, value
            if best is not None and best_iou > threshold:
                unmatched.remove(best)
                tp += 1
        fp, fn = len(order) - tp, len(truth) - tp
        total += tp / (tp + fp + fn)
    return total / len(THRESHOLDS)


def dataset_score(ground_truth, predictions, min_score=0.0):
    """Mean image score over the images of ``ground_truth``.

    Both arguments map an image id to ``(boxes, scores)`` with boxes as lists of
    ``[x, y, w, h]``; an id missing from ``predictions`` has no prediction.
    """
    image_scores = []
    for image_id, (truth, _) in ground_truth.items():
        predicted, scores = predictions.get(image_id, ([], []))
        value = image_score(list(truth), list(predicted), list(scores), min_score)
        if value is not None:
            image_scores.append(value)
    return sum(image_scores) / len(image_scores) if image_scores else float("nan")
