"""The evaluation stage (``tfod-evaluate``): score a detections file, write what people read.

Files in, files out: the detections (a detections CSV, or a Kaggle submission told apart by its
header ``patientId,PredictionString``) are scored against the official labels on a chosen set of
images (:func:`select_images`), and ``metrics.json``, the plots and the gallery are written into
the output folder.

Reliability rules:

* A reused output folder never mixes runs: this stage's own outputs (:data:`OUTPUTS`) are
  removed first, other files are left alone.
* ``metrics.json`` is written before anything is drawn; what cannot be drawn (a truncated or
  missing DICOM) is listed in it (``not_drawn``) and the drawing goes on.
* ``score`` is the detections' score at their best threshold, or at the given ``--threshold``
  (``threshold_from`` says which), boxes scaled only by an explicit ``--box_scale``; the fitted
  box scale and its score sit apart, in ``fitted``, so the two are never mixed up.
* Every input a user gives is checked where it enters: a bad file, row or flag raises
  :class:`tfod.errors.BadInput` (one line, exit 2 from the tool).
"""
from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.progress import format_number
from tfod.runfolder import atomic_write, finite_or_none
from tfod.scoring import analysis
from tfod.scoring.metric import (
    MIN_SCORES,
    THRESHOLDS,
    ScaleFit,
    best_threshold,
    fit_box_scale,
    match_packed,
    pack,
)

COUNT_IOU = 0.5  # the IoU threshold of the reported tp / fp / fn
GALLERY_LIMIT = 200  # images in the gallery by default, the worst first (0: all)
OUTPUTS = ("metrics.json", "threshold_curve.png", "box_scale_curve.png", "box_errors.png",
           "gallery")


# --- inputs ---------------------------------------------------------------------------------


def require_file(path, what: str) -> Path:
    """``path`` as a :class:`Path`; :class:`BadInput` when it is not a readable file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such file ({what})", path)
    return path


def read_detections_file(path) -> BoxTable:
    """A detections CSV, or a Kaggle submission (header ``patientId,PredictionString``)."""
    path = require_file(path, "--detections")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise BadInput("not a text CSV file", path) from None
    names = [name.strip().lstrip("\ufeff") for name in header or []]
    if names == det.SUBMISSION_HEADER:
        return det.read_submission(path)
    return det.read_detections(path)


@dataclass(frozen=True)
class Selection:
    """The images to score: their ground truth and detections, and what was left aside.

    ``counts`` go into ``metrics.json``; ``notes`` are printed and kept there too.
    """

    ground_truth: BoxTable
    detections: BoxTable
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _first(ids, n: int = 3) -> list[str]:
    return sorted(ids)[:n]


def select_images(ground_truth: Mapping[str, ImageBoxes], detections: Mapping[str, ImageBoxes],
                  fold_ids: Sequence[str] | None = None, image_ids: Sequence[str] | None = None,
                  source="detections") -> Selection:
    """The images to score, checked against the labels and the detections.

    * ``image_ids`` (``--images``): those images; one without a detections row counts as an
      empty prediction (said in a note). Detections of other images are set aside.
    * ``fold_ids`` (``--folds_csv/--fold``): the fold's images, each must have a row.
    * neither: the images of the detections; a note says how many labelled images were left
      out of the score. No detection row at all is then an error (nothing to score).
    """
    ground_truth, detections = BoxTable.of(ground_truth), BoxTable.of(detections)
    unknown = set(detections) - set(ground_truth)
    if unknown:
        raise BadInput(f"{len(unknown)} image(s) are not in the labels, e.g. {_first(unknown)}",
                       source)
    if image_ids is not None and fold_ids is not None:
        raise BadInput("give --images or --folds_csv/--fold, not both")
    if image_ids is not None:
        return _select_listed(ground_truth, detections, list(image_ids), source)
    if fold_ids is not None:
        return _select_fold(ground_truth, detections, list(fold_ids), source)
    if not len(detections):
        raise BadInput("no detection row: nothing to score (--images FILE names the images to "
                       "score, each then counting as an empty prediction)", source)
    left_out = len(ground_truth) - len(detections)
    notes = [f"{left_out} labelled image(s) have no row in {source} and are left out of the "
             "score (--images FILE names the images to score)"] if left_out else []
    return Selection(ground_truth.subset(list(detections)), detections,
                     {"labelled_images_not_scored": left_out}, notes)


def _select_listed(truth: BoxTable, detections: BoxTable, ids: list[str], source) -> Selection:
    not_labelled = [i for i in ids if i not in truth]
    if not_labelled:
        raise BadInput(f"{len(not_labelled)} image(s) of --images are not in the labels, "
                       f"e.g. {not_labelled[:3]}")
    empty = [i for i in ids if i not in detections]
    chosen = set(ids)
    outside = sum(1 for i in detections if i not in chosen)
    notes = []
    if not len(detections):
        notes.append(f"WARNING: {source} has no detection row: all {len(ids)} images of "
                     "--images are scored as empty predictions")
    elif empty:
        notes.append(f"{len(empty)} image(s) of --images have no row in {source}: scored as "
                     "empty predictions")
    if outside:
        notes.append(f"{outside} image(s) of {source} are not in --images: not scored")
    predicted = {i: detections.get(i, ImageBoxes.empty()) for i in ids}
    return Selection(truth.subset(ids), BoxTable.of(predicted),
                     {"images_without_detections": len(empty),
                      "detections_outside_images": outside}, notes)


def _select_fold(truth: BoxTable, detections: BoxTable, ids: list[str], source) -> Selection:
    missing = [i for i in ids if i not in detections]
    if missing:
        raise BadInput(f"{len(missing)} image(s) of the fold have no row, e.g. {missing[:3]} "
                       "(--images scores them as empty predictions)", source)
    not_labelled = [i for i in ids if i not in truth]
    if not_labelled:
        raise BadInput(f"{len(not_labelled)} image(s) of the fold are not in the labels, "
                       f"e.g. {not_labelled[:3]}")
    outside = len(detections) - len(ids)
    return Selection(truth.subset(ids), detections.subset(ids),
                     {"detections_outside_fold": outside})


# --- the stage ------------------------------------------------------------------------------


def _key(value: float) -> str:
    return f"{value:.2f}"


def _count_index() -> int:
    return int(np.flatnonzero(THRESHOLDS == COUNT_IOU)[0])


def clear_outputs(output_dir) -> Path:
    """Create ``output_dir`` and remove this stage's own outputs from an earlier run."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    except OSError as error:
        raise BadInput(f"cannot write the output folder ({error.strerror})", output_dir) from None
    return output_dir


def check_options(threshold: float | None, box_scale: float | None, dicom_dir=None) -> None:
    """:class:`BadInput` for a threshold, box scale or DICOM folder that cannot be used."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise BadInput(f"--threshold must be in [0, 1], got {threshold}")
    if box_scale is not None and not (np.isfinite(box_scale) and box_scale > 0):
        raise BadInput(f"--box_scale must be a positive number, got {box_scale}")
    if dicom_dir is not None and not Path(dicom_dir).is_dir():
        raise BadInput("no such folder (--dicom_dir)", dicom_dir)


@dataclass(frozen=True)
class Evaluation:
    """What :func:`compute_metrics` found: the metrics and the arrays the pictures need."""

    metrics: dict
    curve: np.ndarray
    fit: ScaleFit
    errors: dict
    image_scores: np.ndarray
    counts: tuple  # tp, fp, fn (I,) at IoU COUNT_IOU


def compute_metrics(ground_truth: BoxTable, detections: BoxTable, threshold: float | None = None,
                    box_scale: float | None = None) -> Evaluation:
    """The metrics of ``detections`` at ``threshold`` (else at their best threshold) with the
    boxes scaled by ``box_scale`` (else unscaled), and the fitted box scale beside them."""
    packed = pack(ground_truth, detections)
    fit = fit_box_scale(packed, threshold=threshold)
    scale = 1.0 if box_scale is None else float(box_scale)
    matching = match_packed(packed.scaled(scale))
    curve = matching.curve(MIN_SCORES)
    threshold_from = "given" if threshold is not None else "best"
    if threshold is None:
        threshold, _ = best_threshold(MIN_SCORES, curve)
    tp, fp, fn = (c[:, _count_index()] for c in matching.counts(threshold))
    image_scores = matching.image_scores(threshold)
    metrics = {
        "score": matching.score(threshold),
        "threshold": float(threshold),
        "threshold_from": threshold_from,  # "best": the best of MIN_SCORES; "given": --threshold
        "box_scale": scale,
        "fitted": {"box_scale": fit.scale, "threshold": fit.threshold, "score": fit.score},
        "images": int(np.count_nonzero(~np.isnan(image_scores))),
        "images_total": len(packed.ids),
        "positive_images": int(np.count_nonzero(packed.n_gt)),
        "gt_boxes": int(packed.n_gt.sum()),
        "predicted_boxes": int(np.count_nonzero(packed.scores >= threshold)),
        "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()),
        "iou_scores": {_key(t): float(s)
                       for t, s in zip(THRESHOLDS, matching.threshold_scores(threshold),
                                       strict=True)},
        "curve": {_key(s): float(v) for s, v in zip(MIN_SCORES, curve, strict=True)},
        "box_scale_curve": {_key(s): float(v)
                            for s, v in zip(fit.scales, fit.scores, strict=True)},
        "box_errors": analysis.error_analysis(matching, threshold),
    }
    errors = analysis.box_errors(*analysis.matched_pairs(matching, threshold))
    return Evaluation(metrics, curve, fit, errors, image_scores, (tp, fp, fn))


def score_detections(ground_truth: Mapping[str, ImageBoxes],
                     detections: Mapping[str, ImageBoxes], output_dir,
                     threshold: float | None = None, box_scale: float | None = None,
                     dicom_dir=None, gallery_limit: int | None = None,
                     extra: Mapping | None = None) -> dict:
    """Score ``detections`` on the images of ``ground_truth``; write metrics, plots, gallery.

    ``score`` is taken at ``threshold`` (a minimum detection score) when given, else at the
    best one of :data:`MIN_SCORES`, on the boxes unscaled (scaled by ``box_scale`` only when
    given). ``fitted`` holds the best box scale of :data:`tfod.scoring.metric.BOX_SCALES` and
    its score. Writes ``metrics.json`` first, then ``threshold_curve.png``,
    ``box_scale_curve.png``, ``box_errors.png`` and, with ``dicom_dir``, ``gallery/`` (the
    ``gallery_limit`` worst images, default :data:`GALLERY_LIMIT`, 0 for all; the page counts
    those left out); images that could not be drawn are listed in ``not_drawn``. ``extra``
    entries are added to the metrics. Returns the metrics (NaN, for a set with nothing to
    score, becomes ``None``).
    """
    check_options(threshold, box_scale, dicom_dir)
    output_dir = clear_outputs(output_dir)
    ground_truth, detections = BoxTable.of(ground_truth), BoxTable.of(detections)
    scored = compute_metrics(ground_truth, detections, threshold, box_scale)
    metrics = {**scored.metrics, **(extra or {})}
    _write_metrics(metrics, output_dir)
    _draw_plots(scored, output_dir)
    if dicom_dir is not None:
        limit = GALLERY_LIMIT if gallery_limit is None else gallery_limit
        metrics["gallery"] = _draw_gallery(ground_truth, detections, scored, dicom_dir,
                                           output_dir / "gallery", limit)
        metrics["not_drawn"] = metrics["gallery"].pop("not_drawn")
        if metrics["not_drawn"]:
            metrics["notes"] = [*metrics.get("notes", []), (
                f"{len(metrics['not_drawn'])} image(s) could not be drawn: see not_drawn in "
                f"{output_dir / 'metrics.json'}")]
        _write_metrics(metrics, output_dir)
    return finite_or_none(metrics)


def _write_metrics(metrics: Mapping, output_dir: Path) -> None:
    text = json.dumps(finite_or_none(dict(metrics)), indent=2, allow_nan=False) + "\n"
    with atomic_write(output_dir / "metrics.json") as stream:
        stream.write(text)


def _draw_plots(scored: Evaluation, output_dir: Path) -> None:
    from tfod.scoring import report  # matplotlib is only needed here

    metrics = scored.metrics
    report.plot_threshold_curve(MIN_SCORES, scored.curve, metrics["threshold"], metrics["score"],
                                output_dir / "threshold_curve.png")
    report.plot_box_scale_curve(scored.fit.scales, scored.fit.scores, scored.fit.scale,
                                output_dir / "box_scale_curve.png")
    report.plot_box_errors(scored.errors, output_dir / "box_errors.png")


def _draw_gallery(ground_truth: BoxTable, detections: BoxTable, scored: Evaluation, dicom_dir,
                  gallery_dir: Path, limit: int) -> dict:
    """The gallery of the ``limit`` worst images (0: all)."""
    from tfod.scoring.report import GalleryItem, write_gallery

    threshold, scale = scored.metrics["threshold"], scored.metrics["box_scale"]
    tp, fp, fn = scored.counts
    items = []
    for i, patient_id in enumerate(ground_truth.ids):
        predicted = detections.get(patient_id, ImageBoxes.empty())
        keep = np.flatnonzero(predicted.scores >= threshold)
        keep = keep[np.argsort(-predicted.scores[keep], kind="stable")]
        items.append(GalleryItem(
            patient_id=patient_id, score=float(scored.image_scores[i]),
            gt_boxes=ground_truth[patient_id].boxes,
            pred_boxes=box_ops.scale_xywh(predicted.boxes[keep], scale),
            pred_scores=predicted.scores[keep],
            tp=int(tp[i]), fp=int(fp[i]), fn=int(fn[i]),
        ))
    return write_gallery(items, dicom_dir, gallery_dir, limit or None)


def _fold_ids(folds_csv, fold: int) -> list[str]:
    from tfod.data import splits  # scikit-learn, seconds to import: only for --folds_csv

    try:
        return splits.fold_ids(require_file(folds_csv, "--folds_csv"), fold)
    except BadInput:
        raise
    except ValueError as error:  # splits names the file and row in its message
        raise BadInput(str(error)) from None


def score_files(detections_csv, labels_csv, output_dir, folds_csv=None, fold: int | None = None,
                images=None, **options) -> dict:
    """:func:`score_detections` on a detections file against the official labels CSV.

    The images are chosen by :func:`select_images`: ``images`` (a file of patientIds),
    ``folds_csv`` with ``fold``, or those of the detections. ``options`` are
    :func:`score_detections`' (``threshold``, ``box_scale``, ``dicom_dir``, ``gallery_limit``).
    """
    if (folds_csv is None) != (fold is None):
        raise BadInput("--folds_csv and --fold go together")
    if images is not None and folds_csv is not None:
        raise BadInput("give --images or --folds_csv/--fold, not both")
    check_options(options.get("threshold"), options.get("box_scale"), options.get("dicom_dir"))
    fold_ids = None if folds_csv is None else _fold_ids(folds_csv, fold)
    image_ids = None if images is None else det.read_patient_ids(
        require_file(images, "--images"), repeats=True)
    labels = det.read_labels(require_file(labels_csv, "--labels_csv"))
    if not len(labels):
        raise BadInput("no label row: nothing to score against", labels_csv)
    selection = select_images(labels, read_detections_file(detections_csv), fold_ids, image_ids,
                              source=str(detections_csv))
    extra = {**selection.counts, **({"notes": selection.notes} if selection.notes else {})}
    return score_detections(selection.ground_truth, selection.detections, output_dir,
                            extra=extra, **options)


# --- text -----------------------------------------------------------------------------------


def score_label(metrics: Mapping) -> str:
    """What the headline score is: at the detections' own best threshold, or at the given one."""
    return ("score at the given threshold" if metrics.get("threshold_from") == "given"
            else "score at its best threshold")


def format_table(metrics: Mapping) -> str:
    """A short text table of the headline numbers, then the notes."""
    fitted = metrics["fitted"]
    rows = [
        (score_label(metrics), format_number(metrics["score"], 4)),
        ("  threshold (min score)", format_number(metrics["threshold"], 2)),
        ("  box scale applied", format_number(metrics["box_scale"], 2)),
        ("score with fitted box scale", format_number(fitted["score"], 4)),
        ("  fitted box scale @ threshold",
         f"{format_number(fitted['box_scale'], 2)} @ {format_number(fitted['threshold'], 2)}"),
        ("images scored / total", f"{metrics['images']} / {metrics['images_total']}"),
        ("positive images", str(metrics["positive_images"])),
        (f"tp / fp / fn @ IoU {COUNT_IOU}", f"{metrics['tp']} / {metrics['fp']} / {metrics['fn']}"),
    ]
    errors = metrics["box_errors"]
    for name in ("width_ratio", "height_ratio", "centre_dx", "centre_dy"):
        if errors[name]["median"] is not None:
            rows.append((f"{name} median [IQR]",
                         f"{errors[name]['median']:.3f} [{errors[name]['iqr']:.3f}]"))
    if "gallery" in metrics:
        rows.append(("gallery", metrics["gallery"]["index"]))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"not drawn: {patient_id}: {reason}"
              for patient_id, reason in metrics.get("not_drawn", {}).items()]
    return "\n".join(lines + [f"note: {note}" for note in metrics.get("notes", [])])
