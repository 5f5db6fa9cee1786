"""The RSNA competition metric, exact and vectorized: boxes in, numbers out.

Pure computation (the threshold sweep and the box-scale fit included), so that the trainer's
evaluator can import it; box-error analysis is :mod:`tfod.scoring.analysis`, and files,
``metrics.json`` and plots are the evaluation stage's (:mod:`tfod.scoring.stage`).

The metric (the competition's evaluation page): for each image and each IoU threshold
``t`` in 0.40, 0.45, ..., 0.75, take the predictions in decreasing score order; each one hits
the still-unmatched ground-truth box with the highest IoU if that IoU is greater than ``t``
(strictly). With TP hits, FP = predictions - TP and FN = ground-truth boxes - TP, the image
scores ``TP / (TP + FP + FN)`` at ``t``; its score is the mean over the 8 thresholds and the
dataset's score is the mean over images. An image with neither ground truth nor prediction is
left out of the mean; an image without ground truth but with a prediction scores 0.

Exactness choices:

* The thresholds are the float64 values nearest to the decimals 0.40, ..., 0.75 (written as
  literals; ``0.40 + 0.05 * k`` would give ``0.6000000000000001`` for 0.60). IoUs are float64
  (:func:`tfod.boxes.pairwise_iou_xywh`); for integer pixel boxes the IoU is a correctly
  rounded ratio of integers, so a ratio of exactly ``t`` equals the threshold and does not hit.
* Equal scores keep their input order (stable sort); equal IoUs go to the first ground-truth
  box in input order.
* A minimum detection score ``s`` keeps the predictions with ``score >= s``.

Speed: only images with both ground truth and predictions (the rows) can have hits, and in
them only the candidates, predictions whose IoU with some true box exceeds the lowest threshold:
the others never change the matching, they only count as FP. A cheap per-axis bound
(:func:`may_exceed`, shared by both paths below) finds the
pairs whose IoU may exceed it, and only those get the exact IoU. Candidates are padded per row
by decreasing score. Rows whose candidates all prefer different true boxes, or each exceed the
lowest threshold with one true box only (one true box is the common case), are matched without
a loop; the rest run the greedy matching as a loop over the candidate rank, each step
vectorized over the rows and the 8 thresholds. Because matching is
greedy in score order, the matches of the top-``n`` predictions do not depend on the others:
one matching serves every minimum score of a sweep.

One score alone (:func:`competition_score`) takes a shorter path: it keeps the predictions
above the minimum score first and needs no per-candidate hits. In an image where each
prediction exceeds the lowest threshold with one true box at most, a true box is hit at ``t``
exactly when its best IoU exceeds ``t``; only the other images run the greedy loop.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfod import boxes as box_ops
from tfod.detections import BoxTable, ImageBoxes

THRESHOLDS = np.array([0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75])
MIN_SCORES = np.round(np.arange(5, 96) / 100, 2)  # 0.05, 0.06, ..., 0.95
BOX_SCALES = np.round(np.arange(70, 111) / 100, 2)  # 0.70, 0.71, ..., 1.10


@dataclass(frozen=True)
class Packed:
    """Ground truth and predictions of the images ``ids``, ready for matching.

    Only the predictions with a score of at least ``min_score`` count. Per image (I,): ``n_gt``
    and ``max_score`` (``-inf`` without prediction); per prediction, counted or not:
    ``image_of_pred`` (its index in ``ids``) and ``scores``.
    Only the ``rows`` (R,) images that have both ground truth and predictions can have hits:
    their true boxes are padded into ``gt_boxes`` (R, G, 4), zeros in the padding; their
    predictions are listed flat, grouped by row: ``pred_row`` (N,), ``pred_boxes`` (N, 4) and
    ``pred_scores`` (N,). Boxes are pixel ``x, y, w, h``.
    """

    ids: list[str]
    min_score: float
    n_gt: np.ndarray
    max_score: np.ndarray
    image_of_pred: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    gt_boxes: np.ndarray
    pred_row: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray

    def scaled(self, factor: float) -> Packed:
        """The same, with every predicted box scaled about its centre by ``factor``."""
        if factor == 1.0:
            return self
        return dataclasses.replace(self, pred_boxes=box_ops.scale_xywh(self.pred_boxes, factor))


def _ranks(row: np.ndarray, n_rows: int):
    """The position of each item within its row (``row`` non-decreasing), and the widest row."""
    counts = np.bincount(row, minlength=n_rows)
    rank = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank, max(int(counts.max(initial=0)), 1)


def _pad(row: np.ndarray, rank: np.ndarray, shape: tuple[int, int], values: np.ndarray, fill):
    """``values`` (N, ...) placed at ``[row, rank]`` of an array of ``shape`` (R, W) + (...)."""
    padded = np.full(shape + values.shape[1:], fill, dtype=values.dtype)
    padded[row, rank] = values
    return padded


def _has_nan(values: np.ndarray) -> bool:
    """Whether ``values`` holds a NaN (``min`` propagates NaN, and is cheaper than ``isnan``)."""
    return values.size > 0 and bool(np.isnan(values.min()))


def _aligned(ground_truth: BoxTable, predictions: BoxTable) -> BoxTable:
    """``predictions`` with the image indices of ``ground_truth.ids``."""
    if predictions.ids is ground_truth.ids or predictions.ids == ground_truth.ids:
        return predictions
    position = pd.Index(ground_truth.ids).get_indexer(predictions.ids)
    if (position < 0).any():
        unknown = [i for i, p in zip(predictions.ids, position, strict=True) if p < 0]
        raise ValueError(
            f"{len(unknown)} predicted image(s) have no ground truth, e.g. {sorted(unknown)[:3]}"
        )
    return BoxTable(ground_truth.ids, position[predictions.image], predictions.boxes,
                    predictions.scores)


def pack(ground_truth: Mapping[str, ImageBoxes], predictions: Mapping[str, ImageBoxes],
         min_score: float = -np.inf) -> Packed:
    """Arrange the images of ``ground_truth`` for matching; see :class:`Packed`.

    Only the predictions with ``score >= min_score`` are kept. An image missing from
    ``predictions`` has no prediction; a prediction for an image that is not in
    ``ground_truth`` is an error (it cannot be scored).
    """
    truth = BoxTable.of(ground_truth)
    predicted = _aligned(truth, BoxTable.of(predictions))
    _check_not_nan(predicted)
    n_gt, max_score = truth.counts(), predicted.max_scores(min_score)
    rows = np.flatnonzero((n_gt > 0) & (max_score >= min_score))
    gt_row = np.repeat(np.arange(len(rows)), n_gt[rows])
    rank, width = _ranks(gt_row, len(rows))
    gt_boxes = _pad(gt_row, rank, (len(rows), width),
                    np.take(truth.boxes, truth.box_indices(rows), axis=0), 0.0)
    pred_index = predicted.box_indices(rows)
    pred_row = np.repeat(np.arange(len(rows)), predicted.counts()[rows])
    row_kept = predicted.scores[pred_index] >= min_score
    pred_index, pred_row = pred_index[row_kept], pred_row[row_kept]
    return Packed(truth.ids, min_score, n_gt, max_score, predicted.image, predicted.scores, rows,
                  gt_boxes, pred_row, np.take(predicted.boxes, pred_index, axis=0),
                  predicted.scores[pred_index])


@dataclass(frozen=True)
class Matching:
    """Greedy matches of the predictions of the :attr:`Packed.rows` at every IoU threshold.

    Only the candidates, the predictions whose IoU with some true box of their row exceeds the
    lowest threshold, can hit; the others never change the matching. Per row, by decreasing
    score: ``candidate_scores`` (R, C) (``-inf`` in the padding), ``candidate_boxes`` (R, C, 4);
    ``hits`` (R, T, C): candidate ``k`` hits a true box at threshold ``THRESHOLDS[t]``;
    ``matched`` (R, T, C): the index of that box, -1 for none.
    """

    packed: Packed
    candidate_scores: np.ndarray
    candidate_boxes: np.ndarray
    hits: np.ndarray
    matched: np.ndarray

    @property
    def ids(self) -> list[str]:
        return self.packed.ids

    @functools.cached_property
    def _cumulative_hits(self) -> np.ndarray:
        """(C + 1, R, T): hits among the first ``n`` candidates of each row."""
        rows, thresholds, width = self.hits.shape
        cumulative = np.zeros((width + 1, rows, thresholds), dtype=np.int64)
        for k in range(width):  # a loop over the few ranks beats a cumsum along a short axis
            np.add(cumulative[k], self.hits[:, :, k], out=cumulative[k + 1])
        return cumulative

    def _row_tp(self, min_score: float):
        """``kept`` (R,) and ``tp`` (R, T) of the rows at ``min_score``."""
        packed = self.packed
        kept = np.bincount(packed.pred_row[packed.pred_scores >= min_score],
                           minlength=len(packed.rows))
        candidates_kept = np.count_nonzero(self.candidate_scores >= min_score, axis=1)
        rows, thresholds = np.arange(len(kept))[:, None], np.arange(len(THRESHOLDS))
        return kept, self._cumulative_hits[candidates_kept[:, None], rows, thresholds]

    def kept(self, min_score: float) -> np.ndarray:
        """(I,) the number of predictions with ``score >= min_score``."""
        packed = self.packed
        kept = packed.image_of_pred[packed.scores >= max(min_score, packed.min_score)]
        return np.bincount(kept, minlength=len(packed.ids))

    def counts(self, min_score: float = 0.0):
        """``tp, fp, fn`` (I, T) of the predictions kept at ``min_score``."""
        packed = self.packed
        kept = self.kept(min_score)
        tp_rows = self._row_tp(min_score)[1]
        tp = np.zeros((len(packed.ids), len(THRESHOLDS)), dtype=np.int64)
        tp[packed.rows] = tp_rows
        return tp, kept[:, None] - tp, packed.n_gt[:, None] - tp

    def image_scores(self, min_score: float = 0.0) -> np.ndarray:
        """(I,) each image's score; NaN for an image left out (no ground truth, no prediction)."""
        tp, fp, fn = self.counts(min_score)
        total = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            per_threshold = np.where(total > 0, tp / np.maximum(total, 1), np.nan)
        return per_threshold.mean(axis=1)

    def score(self, min_score: float = 0.0) -> float:
        """The competition score at ``min_score``; NaN when every image is left out.

        Only rows can score above 0, so this needs no per-image work outside them.
        """
        packed = self.packed
        kept, tp = self._row_tp(min_score)
        n_gt = packed.n_gt[packed.rows]
        row_scores = (tp / (kept[:, None] + n_gt[:, None] - tp)).mean(axis=1)
        scored = np.count_nonzero((packed.n_gt > 0) | (packed.max_score >= min_score))
        return float(row_scores.sum() / scored) if scored else float("nan")

    def curve(self, min_scores=MIN_SCORES) -> np.ndarray:
        """The score at each minimum detection score."""
        return np.array([self.score(s) for s in min_scores])

    def threshold_scores(self, min_score: float = 0.0) -> np.ndarray:
        """(T,) the score at each IoU threshold alone (mean over the images scored)."""
        tp, fp, fn = self.counts(min_score)
        total = tp + fp + fn
        scored = total[:, 0] > 0
        return (tp[scored] / total[scored]).mean(axis=0) if scored.any() else np.full(
            len(THRESHOLDS), np.nan)


def _pairs(packed: Packed):
    """Every (row prediction, true box of its row) pair: prediction indices and box indices."""
    gt_of_pred = packed.n_gt[packed.rows][packed.pred_row]
    per_box = [np.flatnonzero(gt_of_pred > g) for g in range(packed.gt_boxes.shape[1])]
    return (np.concatenate(per_box),
            np.repeat(np.arange(len(per_box)), [len(preds) for preds in per_box]))


def may_exceed(predicted: box_ops.CornerColumns, true: box_ops.CornerColumns, pred: np.ndarray,
               box: np.ndarray, threshold: float):
    """The pairs ``(predicted[pred[k]], true[box[k]])`` whose IoU may exceed ``threshold``.

    A cheap bound first, so that few pairs need the exact IoU: along each axis
    IoU <= overlap / max(size), computed from the corners as IoU is; a relative margin of 1e-9
    covers rounding. The x test runs first and leaves few pairs for the y test.
    Returns the kept ``pred`` and ``box`` indices.
    """
    for low, high in (("x1", "x2"), ("y1", "y2")):
        a_low, a_high = getattr(predicted, low)[pred], getattr(predicted, high)[pred]
        b_low, b_high = getattr(true, low)[box], getattr(true, high)[box]
        overlap = np.minimum(a_high, b_high) - np.maximum(a_low, b_low)
        size = np.maximum(a_high - a_low, b_high - b_low)
        close = np.flatnonzero(overlap > threshold * (1 - 1e-9) * size)
        pred, box = pred[close], box[close]
    return pred, box


def _pred_ious(packed: Packed):
    """The IoU of the row predictions with the true boxes of their rows, where it may matter.

    Returns ``iou`` (N, G), exact where it exceeds the lowest threshold and 0 elsewhere (such an
    IoU can neither hit nor beat one that does), and ``candidate`` (N,): some IoU exceeds it.
    """
    width = packed.gt_boxes.shape[1]
    pred, box = _pairs(packed)
    predicted = box_ops.corner_columns(packed.pred_boxes)
    true = box_ops.corner_columns(packed.gt_boxes.reshape(-1, 4))
    pred, gt = may_exceed(predicted, true, pred, packed.pred_row[pred] * width + box,
                          THRESHOLDS[0])
    exact = box_ops.paired_iou(predicted.take(pred), true.take(gt))
    above = exact > THRESHOLDS[0]
    iou = np.zeros((len(packed.pred_row), width))
    iou[pred[above], gt[above] % width] = exact[above]
    candidate = np.zeros(len(packed.pred_row), dtype=bool)
    candidate[pred[above]] = True
    return iou, candidate


def _candidates(packed: Packed):
    """The candidates of each row by decreasing score (equal scores in input order).

    Returns ``scores`` (R, C), ``boxes`` (R, C, 4), ``iou`` (R, C, G) and ``count`` (R,).
    """
    iou, candidate = _pred_ious(packed)
    chosen = np.flatnonzero(candidate)
    row = packed.pred_row[chosen]
    rank, width = _ranks(row, len(packed.rows))
    shape = (len(packed.rows), width)
    order = np.argsort(-_pad(row, rank, shape, packed.pred_scores[chosen], -np.inf), axis=1,
                       kind="stable")
    by_score = np.take_along_axis(_pad(row, rank, shape, chosen, -1), order, axis=1)
    chosen = by_score[by_score >= 0]  # still grouped by row, so ``row`` and ``rank`` hold
    return (_pad(row, rank, shape, packed.pred_scores[chosen], -np.inf),
            _pad(row, rank, shape, np.take(packed.pred_boxes, chosen, axis=0), 0.0),
            _pad(row, rank, shape, iou[chosen], 0.0),
            np.bincount(row, minlength=len(packed.rows)))


def _match_greedy(iou: np.ndarray, n_gt: np.ndarray, n_pred: np.ndarray):
    """Rows with any number of true boxes: one step per prediction rank, all rows at once.

    ``iou`` (M, P, G); returns ``hits`` and ``matched`` (M, T, P). The rows are taken by
    decreasing ``n_pred``, so that the rows still matching at each step come first.
    """
    order = np.argsort(-n_pred, kind="stable")
    iou, n_pred = iou[order], n_pred[order]
    n_rows, n_preds, n_truths = iou.shape
    hits = np.zeros((n_rows, len(THRESHOLDS), n_preds), dtype=bool)
    matched = np.full(hits.shape, -1)
    unmatched = np.repeat((np.arange(n_truths) < n_gt[order, None])[:, None, :],
                          len(THRESHOLDS), axis=1)
    for k in range(n_preds):
        active = np.count_nonzero(n_pred > k)
        candidates = np.where(unmatched[:active], iou[:active, k, None, :], -np.inf)  # (A,T,G)
        best = candidates.argmax(axis=2)
        hit = np.take_along_axis(candidates, best[..., None], axis=2)[..., 0] > THRESHOLDS
        row, threshold = np.nonzero(hit)
        unmatched[row, threshold, best[row, threshold]] = False
        hits[:active, :, k] = hit
        matched[:active, :, k] = np.where(hit, best, -1)
    unsorted = np.argsort(order)
    return hits[unsorted], matched[unsorted]


def _preferred_boxes(iou: np.ndarray, count: np.ndarray):
    """Each candidate's preferred true box (the first of its highest IoU) and that IoU (R, C),
    and (R,) whether the candidates of each row all prefer different boxes."""
    n_rows, n_candidates, n_truths = iou.shape
    preferred = iou.argmax(axis=2)
    real = np.arange(n_candidates) < count[:, None]
    votes = np.bincount(np.nonzero(real)[0] * n_truths + preferred[real],
                        minlength=n_rows * n_truths)
    return (preferred, np.take_along_axis(iou, preferred[..., None], axis=2)[..., 0],
            (votes.reshape(n_rows, n_truths) <= 1).all(axis=1))


def _match_exclusive(best: np.ndarray, preferred: np.ndarray, n_truths: int):
    """Rows where each candidate exceeds the lowest threshold with one true box only: it can
    hit no other, so of the candidates that prefer a box, the first above the threshold takes
    it (one true box is the common case).

    ``best`` and ``preferred`` (S, P); returns ``hits`` and ``matched`` (S, T, P).
    """
    above = best[:, None, :] > THRESHOLDS[:, None]  # (S, T, P)
    hits = np.zeros_like(above)
    for box in range(n_truths):
        wants = above & (preferred == box)[:, None, :]
        hits |= wants & (np.arange(above.shape[2]) == wants.argmax(axis=2)[..., None])
    return hits, np.where(hits, preferred[:, None, :], -1)


def match_packed(packed: Packed) -> Matching:
    """Run the greedy matching of the rows' candidates (see the module docstring).

    Most rows need no loop. When the candidates of a row all prefer different true boxes, none
    takes another's box: each hits its preferred one when above the threshold. Rows where each
    candidate can hit one box only go through :func:`_match_exclusive`, the others through
    :func:`_match_greedy`.
    """
    scores, boxes, iou, count = _candidates(packed)
    preferred, best, apart = _preferred_boxes(iou, count)
    hits = best[:, None, :] > THRESHOLDS[:, None]  # right for the rows apart
    matched = np.where(hits, preferred[:, None, :], -1)
    exclusive = np.count_nonzero(iou, axis=2).max(axis=1, initial=0) <= 1  # iou is 0 or above
    rows = np.flatnonzero(~apart & exclusive)
    hits[rows], matched[rows] = _match_exclusive(best[rows], preferred[rows], iou.shape[2])
    rows, n_gt = np.flatnonzero(~apart & ~exclusive), packed.n_gt[packed.rows]
    hits[rows], matched[rows] = _match_greedy(iou[rows], n_gt[rows], count[rows])
    return Matching(packed, scores, boxes, hits, matched)


def match(ground_truth: Mapping[str, ImageBoxes], predictions: Mapping[str, ImageBoxes],
          box_scale: float = 1.0) -> Matching:
    """Match ``predictions`` (scaled by ``box_scale``) to ``ground_truth``; see :func:`pack`."""
    return match_packed(pack(ground_truth, predictions).scaled(box_scale))


def competition_score(ground_truth: Mapping[str, ImageBoxes],
                      predictions: Mapping[str, ImageBoxes],
                      min_score: float = 0.0, box_scale: float = 1.0) -> float:
    """The competition score of ``predictions`` over the images of ``ground_truth``.

    A direct path for one score (see :func:`_positive_tp`); :func:`match` serves the rest.
    """
    truth = BoxTable.of(ground_truth)
    predicted = _aligned(truth, BoxTable.of(predictions))
    _check_not_nan(predicted)
    keep = predicted.scores >= min_score
    n_gt = truth.counts()
    kept = np.diff(np.concatenate(([0], np.cumsum(keep)))[predicted.offsets])
    scored = np.count_nonzero(n_gt | kept)
    if not scored:
        return float("nan")
    chosen = np.flatnonzero(keep & (n_gt[predicted.image] > 0))
    boxes = predicted.boxes[chosen]
    if box_scale != 1.0:
        boxes = box_ops.scale_xywh(boxes, box_scale)
    positives = np.flatnonzero(n_gt)
    tp = _positive_tp(truth, positives, predicted.image[chosen], boxes, predicted.scores[chosen])
    total = (kept[positives] + n_gt[positives])[:, None] - tp
    return float((tp / total).mean(axis=1).sum() / scored)


def _check_not_nan(predicted: BoxTable):
    if _has_nan(predicted.scores) or _has_nan(predicted.boxes):
        raise ValueError("predicted boxes and scores must not be NaN")


def _positive_tp(truth: BoxTable, positives: np.ndarray, image: np.ndarray, boxes: np.ndarray,
                 scores: np.ndarray) -> np.ndarray:
    """(P, T) true positives of the images ``positives`` (those with ground truth).

    ``image``, ``boxes``, ``scores`` are their kept predictions, grouped by image. Where every
    prediction exceeds the lowest threshold with one true box at most, only it can take that
    box: a true box is hit at ``t`` when its best IoU exceeds ``t``. The other images run the
    greedy matching.
    """
    pred, box, iou = _pairs_above(truth, image, boxes)
    shared = np.bincount(pred, minlength=len(image)) > 1
    greedy = np.zeros(len(truth.ids), dtype=bool)
    greedy[image[shared]] = True
    forced = ~greedy[image[pred]]
    best = np.zeros(len(truth.boxes))
    np.maximum.at(best, box[forced], iou[forced])
    tp = _boxes_above(best, truth.counts()[positives])
    if greedy.any():
        greedy_images = np.flatnonzero(greedy)
        in_greedy = ~forced
        tp[np.searchsorted(positives, greedy_images)] = _greedy_tp(
            truth, greedy_images, image, scores, pred[in_greedy], box[in_greedy],
            iou[in_greedy])
    return tp


def _boxes_above(best: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """(P, T) per image, its true boxes (``n_gt`` (P,) each, in order) with ``best > t``."""
    exceeded = np.searchsorted(THRESHOLDS, best)  # the number of thresholds below ``best``
    image = np.repeat(np.arange(len(n_gt)), n_gt)
    n = len(THRESHOLDS) + 1
    per_count = np.bincount(image * n + exceeded, minlength=len(n_gt) * n).reshape(-1, n)
    return np.cumsum(per_count[:, :0:-1], axis=1)[:, ::-1]


def _pairs_above(truth: BoxTable, image: np.ndarray, boxes: np.ndarray):
    """The (prediction, true box of its image) pairs whose IoU exceeds the lowest threshold.

    :func:`may_exceed` leaves few pairs for the exact IoU. Returns prediction and box indices
    and IoUs.
    """
    first, n_gt = truth.offsets[image], truth.counts()[image]
    per_box = [np.flatnonzero(n_gt > g) for g in range(int(n_gt.max(initial=0)))]
    pred = np.concatenate(per_box) if per_box else np.zeros(0, dtype=np.int64)
    box = first[pred] + np.repeat(np.arange(len(per_box)), [len(p) for p in per_box])
    predicted, true = box_ops.corner_columns(boxes), box_ops.corner_columns(truth.boxes)
    pred, box = may_exceed(predicted, true, pred, box, THRESHOLDS[0])
    iou = box_ops.paired_iou(predicted.take(pred), true.take(box))
    above = np.flatnonzero(iou > THRESHOLDS[0])
    return pred[above], box[above], iou[above]


def _greedy_tp(truth: BoxTable, images: np.ndarray, image: np.ndarray, scores: np.ndarray,
               pred: np.ndarray, box: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """(M, T) true positives of ``images`` by :func:`_match_greedy`, from the pairs above the
    lowest threshold (``pred``, ``box``, ``iou``) of their predictions (``image``, ``scores``)."""
    candidates = np.unique(pred)
    order = np.lexsort((-scores[candidates], image[candidates]))  # stable: ties in input order
    candidates = candidates[order]
    row = np.searchsorted(images, image[candidates])
    rank, width = _ranks(row, len(images))
    slot = np.empty(len(image), dtype=np.int64)
    slot[candidates] = np.arange(len(candidates))
    n_gt = truth.counts()[images]
    padded = np.zeros((len(images), width, int(n_gt.max())))
    padded[row[slot[pred]], rank[slot[pred]], box - truth.offsets[image[pred]]] = iou
    hits, _ = _match_greedy(padded, n_gt, np.bincount(row, minlength=len(images)))
    return hits.sum(axis=2)


def score_curve(ground_truth: Mapping[str, ImageBoxes], predictions: Mapping[str, ImageBoxes],
                min_scores=MIN_SCORES, box_scale: float = 1.0) -> np.ndarray:
    """The competition score at each minimum detection score in ``min_scores``."""
    return match(ground_truth, predictions, box_scale).curve(min_scores)


def best_threshold(min_scores, scores) -> tuple[float, float]:
    """``(threshold, score)`` at the highest score; the lowest threshold among equals."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        return float(min_scores[0]), float("nan")
    best = int(np.nanargmax(scores))
    return float(min_scores[best]), float(scores[best])


@dataclass(frozen=True)
class ScaleFit:
    """The box scale (and minimum score) with the best competition score, and the curve."""

    scale: float
    threshold: float
    score: float
    scales: np.ndarray
    scores: np.ndarray  # the score at each scale (at its best threshold, or the fixed one)


def fit_box_scale(packed: Packed, scales=BOX_SCALES, min_scores=MIN_SCORES,
                  threshold: float | None = None) -> ScaleFit:
    """Scale the predicted boxes about their centres by each of ``scales``; keep the best.

    With ``threshold`` the score is taken at that minimum score, else at each scale's best one.
    Among equal scores the scale closest to 1 wins.
    """
    results = []
    for scale in scales:
        matching = match_packed(packed.scaled(float(scale)))
        if threshold is None:
            results.append(best_threshold(min_scores, matching.curve(min_scores)))
        else:
            results.append((threshold, matching.score(threshold)))
    scores = np.array([score for _, score in results])
    if np.isnan(scores).all():
        return ScaleFit(1.0, results[0][0], float("nan"), np.asarray(scales), scores)
    best_scores = np.flatnonzero(scores == np.nanmax(scores))
    best = best_scores[np.argmin(np.abs(np.asarray(scales)[best_scores] - 1.0))]
    return ScaleFit(float(scales[best]), float(results[best][0]), float(scores[best]),
                    np.asarray(scales, dtype=np.float64), scores)
