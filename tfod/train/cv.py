"""Out-of-fold (OOF) predictions of a cross-validation campaign, their score and a plot.

:func:`assemble_oof` reads the run folders of one model's folds (each evaluated on its own
held-out fold) and writes into ``output_dir``:

* ``oof.csv``: every fold's best-checkpoint validation detections (``predictions/val.csv``)
  concatenated, in the original pixel frame, each image exactly once (an image without
  detections is one row with empty fields). Every training image appears once, predicted by
  the one model that never saw it: the set to fit ensembles and thresholds on.
* ``cv.json``: per fold the best step, ``rsna/score`` and the threshold the evaluator chose on
  that fold alone; and the OOF score at ONE threshold chosen on the whole OOF set, the number to
  compare models by (per-fold thresholds each fit a few hundred images and flatter the mean).
* ``cv_scores.png``: a bar per fold with the OOF score as a line.

The metric is :mod:`tfod.scoring.metric`'s (pure: arrays in, numbers out).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfod import detections as det
from tfod.detections import ImageBoxes
from tfod.errors import BadInput
from tfod.runfolder import RunFolder, finite_or_none, read_best_checkpoint, write_json
from tfod.scoring import metric

OOF_CSV, CV_JSON, CV_PLOT = "oof.csv", "cv.json", "cv_scores.png"
FOLD_NAME = re.compile(r"fold(\d+)$")


class OofError(BadInput):
    """Run folders that do not make an out-of-fold set (no best checkpoint, an image twice):
    bad input (exit 2), as the folders are what the user gave."""


def _fold_predictions(run: RunFolder) -> tuple[dict, det.BoxTable]:
    """The best checkpoint's record and validation detections of one run folder."""
    best = read_best_checkpoint(run)
    if not best or not run.val_detections().exists():
        raise OofError(f"{run.root} has no evaluated best checkpoint ({run.best_checkpoint.name} "
                       f"and {run.val_detections().relative_to(run.root)}): train it to the end")
    return best, det.read_detections(run.val_detections())


def collect_oof(runs: Sequence[RunFolder]) -> tuple[dict[str, ImageBoxes], list[dict]]:
    """Every fold's detections in one mapping (each image once) and one entry per fold."""
    oof: dict[str, ImageBoxes] = {}
    folds = []
    for run in runs:
        best, detections = _fold_predictions(run)
        twice = [image for image in detections if image in oof]
        if twice:
            raise OofError(f"{len(twice)} image(s) of {run.root} are in an earlier fold too, "
                           f"e.g. {twice[:3]}: the runs are not folds of one split")
        oof.update(detections.items())
        match = FOLD_NAME.search(run.root.name)
        folds.append({"run": run.root.name, "run_dir": str(run.root),
                      "fold": int(match.group(1)) if match else None,
                      "best_step": best["step"], "checkpoint": best["checkpoint"],
                      "score": finite_or_none(best.get("score")),
                      "threshold": finite_or_none(best.get("threshold")),
                      "ids": list(detections)})
    return oof, folds


def score_oof(truth: det.BoxTable, oof: dict[str, ImageBoxes], folds: list[dict]) -> dict:
    """The OOF score at the one threshold best on the OOF set; each fold's score there too."""
    unlabelled = sorted(set(oof) - set(truth))
    if unlabelled:
        raise OofError(f"{len(unlabelled)} out-of-fold image(s) are not in the labels, "
                       f"e.g. {unlabelled[:3]}")
    truth = {image_id: truth[image_id] for image_id in oof}
    curve = metric.score_curve(truth, oof)
    threshold, score = metric.best_threshold(metric.MIN_SCORES, curve)
    for fold in folds:
        ids = fold.pop("ids")
        fold["images"] = len(ids)
        fold["score_at_oof_threshold"] = finite_or_none(metric.competition_score(
            {i: truth[i] for i in ids}, {i: oof[i] for i in ids}, min_score=threshold))
    scores = [fold["score"] for fold in folds if fold["score"] is not None]
    return {
        "oof": {"images": len(oof), "threshold": threshold, "score": finite_or_none(score),
                "curve": {f"{t:.2f}": finite_or_none(v) for t, v in zip(metric.MIN_SCORES, curve,
                                                                 strict=True)}},
        "folds": folds,
        "fold_score_mean": finite_or_none(float(np.mean(scores))) if scores else None,
        "fold_score_std": finite_or_none(float(np.std(scores))) if scores else None,
    }


def plot_fold_scores(summary: dict, path) -> Path:
    """A bar per fold (its best rsna/score) and the OOF score as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"fold {f['fold']}" if f["fold"] is not None else f["run"] for f in summary["folds"]]
    values = [f["score"] or 0.0 for f in summary["folds"]]
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 4))
    bars = axes.bar(names, values, color="tab:blue")
    axes.bar_label(bars, fmt="%.4f")
    oof = summary["oof"]
    if oof["score"] is not None:
        axes.axhline(oof["score"], color="tab:red", linestyle="--",
                     label=f"OOF {oof['score']:.4f} at threshold {oof['threshold']:.2f}")
        axes.legend(loc="lower right")
    axes.set(ylabel="rsna/score (best checkpoint)", title="Cross-validation scores")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def assemble_oof(run_dirs: Sequence, labels_csv, output_dir) -> dict:
    """Write ``oof.csv``, ``cv.json`` and ``cv_scores.png`` into ``output_dir``; return cv.json."""
    runs = [RunFolder(path) for path in run_dirs]
    if not runs:
        raise OofError("no run folder given")
    oof, folds = collect_oof(runs)
    summary = score_oof(det.read_labels(labels_csv), oof, folds)
    summary["labels_csv"] = str(labels_csv)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    det.write_detections(oof, output_dir / OOF_CSV)
    write_json(output_dir / CV_JSON, summary)
    plot_fold_scores(summary, output_dir / CV_PLOT)
    return summary


def format_summary(summary: dict) -> str:
    """cv.json as a short table: one line per fold, then the OOF line."""
    def text(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [f"{'fold':<6}{'best step':>10}{'score':>9}{'threshold':>11}{'images':>8}"]
    for fold in summary["folds"]:
        lines.append(f"{fold['fold'] if fold['fold'] is not None else fold['run']!s:<6}"
                     f"{fold['best_step']:>10}{text(fold['score']):>9}"
                     f"{text(fold['threshold'], 2):>11}{fold['images']:>8}")
    oof = summary["oof"]
    lines.append(f"OOF: {text(oof['score'])} at one threshold {oof['threshold']:.2f} over "
                 f"{oof['images']} images (fold mean {text(summary['fold_score_mean'])})")
    return "\n".join(lines)
