"""Fuse several models' detections into one set, gate it, and write the Kaggle submission.

Contract: every model is a mapping ``patientId -> ImageBoxes`` in pixels of each original image
(the detections CSV's frame). :func:`fuse` converts each image's boxes, through
:mod:`tfod.boxes`, to the normalized ``x1, y1, x2, y2`` of the ensemble-boxes library using
that image's own width and height, calls the library's fusion, and converts the fused boxes
back to the same image's pixels. Every image of the models comes back, an image without any
box as an empty entry. All the fusion arithmetic is the library's:

* ``wbf``      ``weighted_boxes_fusion`` with the requested ``conf_type``;
* ``avg``      ``weighted_boxes_fusion`` with ``conf_type='avg'`` always: a fused box's
               score is the weighted mean of the models' scores, a model without a box there
               counting 0, the plain score average the reference team used;
* ``nmw``      ``non_maximum_weighted``;
* ``nms``      ``nms``; ``soft_nms``: ``soft_nms`` (``skip_box_thr`` as its ``thresh``).

Equal weights are passed as ``None`` (the library's unweighted path: its ``nms`` would
otherwise divide every score by the number of models); others divided by the largest one:
``wbf``, ``nms`` and ``soft_nms`` depend only on their ratios, and ``nmw`` multiplies scores by
them, so this keeps its scores in [0, 1]. Images with no box in any model skip the library
call (it would return nothing). A :func:`worker_pool` can split the images over processes.
"""
from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import ensemble_boxes
import numpy as np
import pandas as pd
from tqdm import tqdm

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
RSNA_SIZE = (1024, 1024)  # (width, height) of every RSNA image


@dataclass(frozen=True)
class FusionParams:
    """How to fuse: the library function (``method``) and its arguments."""

    method: str = "wbf"
    weights: tuple[float, ...] | None = None  # one per model; None: all equal
    iou_thr: float = 0.55
    skip_box_thr: float = 0.0
    conf_type: str = "avg"

    def checked(self, n_models: int) -> FusionParams:
        """These parameters, validated for ``n_models`` models (BadInput on a bad value)."""
        if self.method not in METHODS:
            raise BadInput(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.conf_type not in CONF_TYPES:
            raise BadInput(f"--conf_type {self.conf_type!r} is not one of {', '.join(CONF_TYPES)}")
        if self.method == "avg" and self.conf_type != "avg":
            raise BadInput("--method=avg is wbf with conf_type 'avg'; use --method=wbf "
                           f"for conf_type {self.conf_type!r}")
        if not 0.0 < self.iou_thr <= 1.0 or not 0.0 <= self.skip_box_thr < 1.0:
            raise BadInput(f"iou_thr {self.iou_thr} must be in (0, 1], skip_box_thr "
                           f"{self.skip_box_thr} in [0, 1)")
        weights = (1.0,) * n_models if self.weights is None else tuple(map(float, self.weights))
        if len(weights) != n_models:
            raise BadInput(f"{len(weights)} weights for {n_models} models")
        if not all(np.isfinite(weights)) or min(weights) <= 0:
            raise BadInput(f"weights must be finite and positive, got {list(weights)}")
        return FusionParams(self.method, weights, float(self.iou_thr),
                            float(self.skip_box_thr), self.conf_type)

    def as_dict(self) -> dict:
        return {**asdict(self), "weights": None if self.weights is None else list(self.weights)}


# --- image sizes -----------------------------------------------------------------------------


def size_arrays(ids: Sequence[str], sizes: Mapping[str, tuple[int, int]] | None):
    """(I,) widths and heights of ``ids``; every id needs a size, unless ``sizes`` is None
    (then every image is RSNA's 1024 x 1024)."""
    if sizes is None:
        return np.full(len(ids), RSNA_SIZE[0], float), np.full(len(ids), RSNA_SIZE[1], float)
    missing = [i for i in ids if i not in sizes]
    if missing:
        raise BadInput(f"{len(missing)} image(s) have no size, e.g. {missing[:3]} "
                       "(give them in --image_sizes)")
    table = np.array([sizes[i] for i in ids], dtype=np.float64).reshape(-1, 2)
    return table[:, 0], table[:, 1]


# --- fusion ----------------------------------------------------------------------------------


def image_ids(models: Sequence[Mapping[str, ImageBoxes]]) -> list[str]:
    """Every image of any model, in first-seen order."""
    return list(dict.fromkeys(i for model in models for i in model))


@dataclass(frozen=True)
class _Stacked:
    """All models' boxes of the images ``ids``, normalized ``x1, y1, x2, y2``, sorted by
    image then model: image ``i`` owns ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    model: np.ndarray


def _stack(models: Sequence[Mapping[str, ImageBoxes]], ids: list[str], width, height) -> _Stacked:
    index = pd.Index(ids)
    parts = []
    for m, model in enumerate(models):
        table = BoxTable.of(model)
        image = index.get_indexer(table.ids)[table.image]
        normalized = box_ops.clip_unit(
            box_ops.xywh_to_xyxy(table.boxes, width[image], height[image]))
        parts.append((image, np.full(len(image), m), normalized, table.scores))
    image, model, normalized, scores = (np.concatenate(column)
                                        for column in zip(*parts, strict=True))
    order = np.lexsort((model, image))
    offsets = np.searchsorted(image[order], np.arange(len(ids) + 1))
    return _Stacked(offsets, normalized[order], scores[order], model[order])


def _weighted_boxes_fusion(lists, weights, params: FusionParams):
    return ensemble_boxes.weighted_boxes_fusion(
        *lists, weights=weights, iou_thr=params.iou_thr, skip_box_thr=params.skip_box_thr,
        conf_type=params.conf_type)


def _non_maximum_weighted(lists, weights, params: FusionParams):
    return ensemble_boxes.non_maximum_weighted(
        *lists, weights=weights, iou_thr=params.iou_thr, skip_box_thr=params.skip_box_thr)


def _nms(lists, weights, params: FusionParams):
    return ensemble_boxes.nms(*lists, iou_thr=params.iou_thr, weights=weights)


def _soft_nms(lists, weights, params: FusionParams):
    return ensemble_boxes.soft_nms(*lists, iou_thr=params.iou_thr, weights=weights,
                                   thresh=params.skip_box_thr)


# Each method's library call (``--method``): ``avg`` is ``wbf`` held to ``conf_type='avg'``.
LIBRARY_CALLS = {"wbf": _weighted_boxes_fusion, "avg": _weighted_boxes_fusion,
                 "nmw": _non_maximum_weighted, "nms": _nms, "soft_nms": _soft_nms}
METHODS = tuple(LIBRARY_CALLS)


def _call_library(params: FusionParams, n_models: int, boxes, scores, model):
    """One image through ensemble-boxes: fused normalized boxes and scores."""
    bounds = np.searchsorted(model, np.arange(n_models + 1))
    parts = list(zip(bounds[:-1], bounds[1:], strict=True))
    lists = ([boxes[a:b] for a, b in parts], [scores[a:b] for a, b in parts],
             [np.zeros(b - a) for a, b in parts])
    weights = None if len(set(params.weights)) == 1 else (
        np.asarray(params.weights) / max(params.weights))
    fused, fused_scores, _ = LIBRARY_CALLS[params.method](lists, weights, params)
    return np.asarray(fused, float).reshape(-1, 4), np.asarray(fused_scores, float).reshape(-1)


def _fuse_chunk(task):
    """Fuse the images of one chunk; returns per-image counts, boxes and scores."""
    params, n_models, offsets, boxes, scores, model = task
    counts, out_boxes, out_scores = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns on each zero-area box it drops
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
            if start == stop:
                counts.append(0)
                continue
            fused, fused_scores = _call_library(
                params, n_models, boxes[start:stop], scores[start:stop], model[start:stop])
            counts.append(len(fused_scores))
            out_boxes.append(fused)
            out_scores.append(fused_scores)
    if not out_boxes:
        return np.array(counts, int), np.zeros((0, 4)), np.zeros(0)
    return np.array(counts, int), np.concatenate(out_boxes), np.concatenate(out_scores)


def _chunks(params: FusionParams, n_models: int, stacked: _Stacked, pieces: int):
    bounds = np.linspace(0, len(stacked.offsets) - 1, pieces + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        start, stop = stacked.offsets[a], stacked.offsets[b]
        yield (params, n_models, stacked.offsets[a:b + 1] - start, stacked.boxes[start:stop],
               stacked.scores[start:stop], stacked.model[start:stop])


def worker_pool(workers: int = 1):
    """A process pool of ``workers`` for :func:`fuse` (None for 1: fuse in this process).

    Spawned, not forked: the caller may hold TensorFlow, which does not survive a fork.
    One process is the default: on a shared 2-core machine the pool measured slower
    (bench/ensemble.py); it pays on idle cores.
    """
    return multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None


def fuse(models: Sequence[Mapping[str, ImageBoxes]],
         sizes: Mapping[str, tuple[int, int]] | None, params: FusionParams | None = None,
         pool=None, progress: bool = False) -> BoxTable:
    """The fused detections of ``models`` (see the module docstring) for every image of any.

    ``sizes``: ``patientId -> (width, height)`` of each original image (None: 1024 x 1024).
    ``params``: default :class:`FusionParams` (wbf, equal weights).
    ``pool``: a :func:`worker_pool` to spread the images over (None: this process).
    """
    params = (params or FusionParams()).checked(len(models))
    ids = image_ids(models)
    width, height = size_arrays(ids, sizes)
    stacked = _stack(models, ids, width, height)
    pieces = 1 if pool is None else 32
    tasks = _chunks(params, len(models), stacked, pieces)
    with tqdm(total=pieces, desc="fuse", unit="chunk", disable=not progress) as bar:
        chunks = map(_fuse_chunk, tasks) if pool is None else pool.imap(_fuse_chunk, tasks)
        results = []
        for result in chunks:
            results.append(result)
            bar.update()
    counts = np.concatenate([r[0] for r in results])
    image = np.repeat(np.arange(len(ids)), counts)
    normalized = np.concatenate([r[1] for r in results])
    pixels = box_ops.xyxy_to_xywh(normalized, width[image], height[image])
    scores = np.clip(np.concatenate([r[2] for r in results]), 0.0, 1.0)  # float rounding only
    return BoxTable(ids, image, pixels, scores)


# --- gating ----------------------------------------------------------------------------------

GATES = ("multiply", "threshold")


def gate(detections: Mapping[str, ImageBoxes], probabilities: Mapping[str, float], mode: str,
         threshold: float = 0.5) -> BoxTable:
    """Gate boxes by an image-level classifier's probability that the image has an opacity.

    ``multiply``: every box score times the image's probability; ``threshold``: an image's
    boxes are dropped when its probability is below ``threshold`` (the image stays, empty).
    Every image of ``detections`` needs a probability.
    """
    if mode not in GATES:
        raise BadInput(f"--gate {mode!r} is not one of {', '.join(GATES)}")
    table = BoxTable.of(detections)
    missing = [i for i in table.ids if i not in probabilities]
    if missing:
        raise BadInput(f"{len(missing)} image(s) have no classifier probability, e.g. "
                       f"{missing[:5]}")
    probability = np.array([probabilities[i] for i in table.ids], dtype=np.float64)[table.image]
    if mode == "multiply":
        return BoxTable(table.ids, table.image, table.boxes, table.scores * probability)
    keep = probability >= threshold
    return BoxTable(table.ids, table.image[keep], table.boxes[keep], table.scores[keep])


# --- submission ------------------------------------------------------------------------------


def for_submission(detections: Mapping[str, ImageBoxes], threshold: float,
                   box_scale: float = 1.0) -> BoxTable:
    """The boxes with ``score >= threshold``, scaled about their centres by ``box_scale``."""
    kept = BoxTable.of(detections).above(threshold)
    return BoxTable(kept.ids, kept.image, box_ops.scale_xywh(kept.boxes, box_scale), kept.scores)


def check_test_ids(ids: Sequence[str], test_ids: Sequence[str]) -> None:
    """Raise :class:`BadInput` unless the detected images ``ids`` are the ``test_ids``."""
    known = set(ids)
    unknown = sorted(known - set(test_ids))
    missing = [i for i in test_ids if i not in known]
    if unknown or missing:
        raise BadInput(f"detections and test ids differ: {len(missing)} test id(s) without "
                       f"detections (e.g. {missing[:3]}), {len(unknown)} detected image(s) not "
                       f"in the test ids (e.g. {unknown[:3]})")


def submit(detections: Mapping[str, ImageBoxes], path, test_ids: Sequence[str],
           threshold: float, box_scale: float = 1.0) -> Path:
    """Write the Kaggle submission of ``detections`` for exactly the ``test_ids``.

    Boxes as :func:`for_submission`; every test id is one row (empty without boxes), and
    detections of an image outside ``test_ids`` or a test id with no detections row are
    errors. The file is written beside ``path``, read back through
    :func:`tfod.detections.read_submission` and checked, then renamed into place, so a
    reader never sees a wrong or half-written submission.
    """
    path = Path(path)
    table = BoxTable.of(detections)
    check_test_ids(table.ids, test_ids)
    chosen = for_submission(table, threshold, box_scale)
    return det.write_submission(
        chosen, path, ids=test_ids,
        check=lambda written: _check_submission(det.read_submission(written), chosen, test_ids))


def _check_submission(read_back: BoxTable, written: BoxTable, test_ids: Sequence[str]) -> None:
    if read_back.ids != list(test_ids):
        raise RuntimeError("the submission read back does not list the test ids in order")
    if len(read_back.scores) != len(written.scores):
        raise RuntimeError(f"the submission read back has {len(read_back.scores)} boxes, "
                           f"{len(written.scores)} written")
