"""Fit the ensemble on validation detections: weights, IoU threshold, score threshold, box scale.

The objective is the competition metric (:mod:`tfod.scoring.metric`) on the validation images,
ideally out-of-fold detections that cover every training image once.

The search is pruned so the full RSNA training set fits in minutes on 2 cores:

1. weights, one model at a time (coordinate descent) at the given ``iou_thr``: equal weights
   first, then each model's weight at each of :data:`WEIGHT_STEPS`, the others at their best
   so far (``1 + 3 * models`` fusions, fewer when a ratio repeats);
2. ``iou_thr``: each of :data:`IOU_GRID` at the best weights.

Each (weights, ``iou_thr``) pair is fused once; the score threshold (:data:`MIN_SCORES`) and
the box scale (every 10th of :data:`BOX_SCALES`) are swept on that fused result, which needs no
new fusion (one matching serves every threshold). The chosen fusion is then refined on the full
box-scale grid. Ties keep the earlier candidate: equal weights and the given ``iou_thr`` first.

The *given* ensemble (at the given threshold, box scale and fusion flags) and the *fitted* one
are kept apart in :class:`FitResult`; each single model is scored at the given threshold and
box scale, and at its own best, so the ensemble is compared with the best one model can do.
(``tfod-evaluate``'s headline score is another thing: a set of detections at its own best
threshold; this module never calls that "given".)
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.infer import ensemble
from tfod.infer.ensemble import FusionParams
from tfod.runfolder import finite_or_none
from tfod.scoring.metric import BOX_SCALES, MIN_SCORES, fit_box_scale, match, pack

WEIGHT_STEPS = (0.5, 2.0, 3.0)  # a model's weight is tried at these multiples of 1
IOU_GRID = (0.4, 0.5, 0.6, 0.7)
COARSE_SCALES = BOX_SCALES[::10]  # 0.70, 0.80, ..., 1.10


@dataclass(frozen=True)
class FitScore:
    """Detections' parameters and their competition score on the validation images."""

    params: FusionParams | None  # None for a single model's own detections
    threshold: float
    box_scale: float
    score: float

    def as_dict(self) -> dict:
        params = None if self.params is None else self.params.as_dict()
        return {"params": params, "threshold": self.threshold, "box_scale": self.box_scale,
                "score": finite_or_none(self.score)}


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` found; ``given`` and ``fitted`` are never mixed."""

    names: list[str]
    given: FitScore
    fitted: FitScore
    singles: dict[str, dict[str, FitScore]]  # name -> {"given": ..., "fitted": ...}
    trace: list[dict]  # one row per fusion of the search
    fusions: int
    images: int
    curves: dict[str, list[float]]  # name -> score at each of MIN_SCORES (at its box scale)
    per_fold: dict[int, float]  # the fitted ensemble's score on each fold's images

    def as_dict(self) -> dict:
        return {
            "models": self.names, "images": self.images, "fusions": self.fusions,
            "given": self.given.as_dict(), "fitted": self.fitted.as_dict(),
            "single_models": {name: {kind: scored.as_dict() for kind, scored in runs.items()}
                              for name, runs in self.singles.items()},
            "search": self.trace,
            "fitted_per_fold": finite_or_none({str(k): v for k, v in self.per_fold.items()}),
            "threshold_curves": {"min_scores": MIN_SCORES.tolist(),
                                 **finite_or_none({k: list(c) for k, c in self.curves.items()})},
        }


def _ratio(weights) -> tuple[float, ...]:
    return tuple(np.round(np.asarray(weights, dtype=np.float64) / min(weights), 6))


def validation_truth(labels: Mapping[str, ImageBoxes], ids: Sequence[str]) -> BoxTable:
    """The labels of the validation images ``ids``; every one must be labelled."""
    labels = BoxTable.of(labels)
    missing = [i for i in ids if i not in labels]
    if missing:
        raise BadInput(f"{len(missing)} validation image(s) are not in the labels, "
                       f"e.g. {missing[:3]}")
    return labels.subset(list(ids))


def _best(truth: BoxTable, detections: Mapping[str, ImageBoxes], scales=COARSE_SCALES) -> FitScore:
    found = fit_box_scale(pack(truth, detections), scales=scales)
    return FitScore(None, found.threshold, found.scale, found.score)


def _given(truth: BoxTable, detections, threshold: float, box_scale: float) -> FitScore:
    score = match(truth, detections, box_scale).score(threshold)
    return FitScore(None, threshold, box_scale, score)


class _Search:
    """Fuses each (weights, iou_thr) once, scores it, and keeps the trace."""

    def __init__(self, models, sizes, truth, pool, progress, transform):
        self.models, self.sizes, self.truth = models, sizes, truth
        self.pool, self.progress = pool, progress
        self.transform = transform or (lambda fused: fused)
        self.trace: list[dict] = []
        self.best: tuple[FitScore, BoxTable] | None = None
        self.tried: set = set()

    def try_params(self, params: FusionParams) -> None:
        key = (_ratio(params.weights), params.iou_thr)
        if key in self.tried:
            return
        self.tried.add(key)
        start = time.perf_counter()
        fused = self.transform(ensemble.fuse(self.models, self.sizes, params, pool=self.pool))
        found = dataclasses.replace(_best(self.truth, fused), params=params)
        self.trace.append({"weights": list(params.weights), "iou_thr": params.iou_thr,
                           "threshold": found.threshold, "box_scale": found.box_scale,
                           "score": finite_or_none(found.score),
                           "seconds": round(time.perf_counter() - start, 2)})
        if self.progress:
            print(format_row(self.trace[-1]), flush=True)
        if self.best is None or found.score > self.best[0].score:
            self.best = (found, fused)


def fit(models: Sequence[Mapping[str, ImageBoxes]], names: Sequence[str],
        labels: Mapping[str, ImageBoxes], sizes: Mapping[str, tuple[int, int]] | None,
        given: FusionParams, threshold: float = 0.5, box_scale: float = 1.0,
        folds: Mapping[str, int] | None = None, transform: Callable | None = None,
        workers: int = 1, progress: bool = False) -> FitResult:
    """Search the ensemble of ``models`` that scores best on ``labels`` (see the module doc).

    ``given``: the flags given (also the method, ``skip_box_thr`` and ``conf_type``
    of every candidate); ``threshold`` and ``box_scale``: the given score threshold and scale.
    ``folds`` (``patientId -> fold``): also score the fitted ensemble on each fold's images.
    ``transform``: applied to every fused result before it is scored (e.g. classifier gating).
    """
    given = given.checked(len(models))
    ids = ensemble.image_ids(models)
    truth = validation_truth(labels, ids)
    singles = {name: {"given": _given(truth, model, threshold, box_scale),
                      "fitted": _best(truth, model)}
               for name, model in zip(names, models, strict=True)}
    pool = ensemble.worker_pool(workers)
    try:
        search = _Search(models, sizes, truth, pool, progress, transform)
        if progress:
            print(format_header())
        search.try_params(dataclasses.replace(given, weights=(1.0,) * len(models)))
        for i, step in itertools.product(range(len(models)), WEIGHT_STEPS):
            weights = list(search.best[0].params.weights)
            weights[i] = step
            search.try_params(dataclasses.replace(given, weights=tuple(weights)))
        best_weights = search.best[0].params.weights
        for iou_thr in (t for t in IOU_GRID if t != given.iou_thr):
            search.try_params(dataclasses.replace(given, weights=best_weights, iou_thr=iou_thr))
        as_given = search.transform(ensemble.fuse(models, sizes, given, pool=pool))
    finally:
        if pool is not None:
            pool.close()
    chosen, fused = search.best
    fitted = dataclasses.replace(_best(truth, fused, BOX_SCALES), params=chosen.params)
    curves = {"ensemble (fitted)": match(truth, fused, fitted.box_scale).curve(MIN_SCORES)}
    for name, model in zip(names, models, strict=True):
        curves[name] = match(truth, model, singles[name]["fitted"].box_scale).curve(MIN_SCORES)
    given_scored = dataclasses.replace(_given(truth, as_given, threshold, box_scale),
                                       params=given)
    return FitResult(list(names), given_scored, fitted, singles, search.trace,
                     len(search.trace), len(ids), {k: list(v) for k, v in curves.items()},
                     _per_fold(truth, fused, fitted, folds or {}))


def _per_fold(truth: BoxTable, fused: BoxTable, fitted: FitScore, folds: Mapping[str, int]):
    scores = {}
    for fold in sorted(set(folds.values())):
        ids = [i for i in truth.ids if folds.get(i) == fold]
        if ids:
            scores[fold] = match(truth.subset(ids), fused.subset(ids),
                                 fitted.box_scale).score(fitted.threshold)
    return scores


def format_header() -> str:
    return f"{'weights':<24} {'iou_thr':>7} {'threshold':>9} {'box_scale':>9} {'score':>7} {'s':>6}"


def format_row(row: Mapping) -> str:
    weights = ",".join(f"{w:g}" for w in row["weights"])
    score = "n/a" if row["score"] is None else f"{row['score']:.4f}"
    return (f"{weights:<24} {row['iou_thr']:>7.2f} {row['threshold']:>9.2f} "
            f"{row['box_scale']:>9.2f} {score:>7} {row['seconds']:>6.1f}")


def format_summary(result: FitResult) -> str:
    """The single models and the ensemble at the given threshold and flags, and fitted, one
    line each."""
    lines = [f"{'':<28} {'at given threshold':>18} {'fitted':>9}  (threshold, box scale of the "
             "fitted)"]

    def line(name, given: FitScore, fitted: FitScore):
        g, f = (("n/a" if not np.isfinite(s.score) else f"{s.score:.4f}") for s in (given, fitted))
        return f"{name:<28} {g:>18} {f:>9}  ({fitted.threshold:.2f}, {fitted.box_scale:.2f})"

    for name, runs in result.singles.items():
        lines.append(line(name, runs["given"], runs["fitted"]))
    lines.append(line("ensemble", result.given, result.fitted))
    return "\n".join(lines)


def plot_curves(result: FitResult, path) -> Path:
    """The threshold curves of each model and of the fitted ensemble, in one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, curve in result.curves.items():
        axes.plot(MIN_SCORES, curve, label=name, linewidth=2.5 if "ensemble" in name else 1.2)
    axes.axvline(result.fitted.threshold, color="grey", linestyle=":")
    axes.set_xlabel("minimum detection score")
    axes.set_ylabel("competition score")
    axes.set_title(f"Ensemble fitted: {result.fitted.score:.4f} at {result.fitted.threshold:.2f}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
