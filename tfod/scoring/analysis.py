"""Box-error analysis: how the matched predicted boxes differ from the true ones.

Size ratios and centre offsets of the pairs a :class:`tfod.scoring.metric.Matching` matched,
summarized by median and quartiles. A systematic size ratio is what ``fit_box_scale`` corrects;
an offset points to a shifted box (a frame or conversion error upstream).
"""
from __future__ import annotations

import numpy as np

from tfod.scoring.metric import THRESHOLDS, Matching


def matched_pairs(matching: Matching, min_score: float, iou: float = THRESHOLDS[0]):
    """``(predicted, true)`` pixel ``x, y, w, h`` boxes (K, 4) of the hits at IoU ``iou``."""
    t = int(np.flatnonzero(THRESHOLDS == iou)[0])
    hits = matching.hits[:, t, :] & (matching.candidate_scores >= min_score)
    row, rank = np.nonzero(hits)
    truth = matching.packed.gt_boxes[row, matching.matched[row, t, rank]]
    return matching.candidate_boxes[row, rank], truth


def _spread(values: np.ndarray) -> dict:
    if not len(values):
        return {"median": None, "q1": None, "q3": None, "iqr": None}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def box_errors(predicted: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per matched pair: width and height ratios (predicted / true), centre offsets in pixels."""
    centre = lambda b: b[:, :2] + b[:, 2:] / 2  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "width_ratio": predicted[:, 2] / truth[:, 2],
            "height_ratio": predicted[:, 3] / truth[:, 3],
            "centre_dx": centre(predicted)[:, 0] - centre(truth)[:, 0],
            "centre_dy": centre(predicted)[:, 1] - centre(truth)[:, 1],
        }


def error_analysis(matching: Matching, min_score: float, iou: float = THRESHOLDS[0]) -> dict:
    """Median and IQR of the :func:`box_errors` of the pairs matched at ``iou``."""
    errors = box_errors(*matched_pairs(matching, min_score, iou))
    summary = {name: _spread(values[np.isfinite(values)]) for name, values in errors.items()}
    return {"pairs": int(len(errors["width_ratio"])), "iou": float(iou), **summary}
