"""How well the classifier separates images with an opacity from those without.

:func:`evaluate_run` scores a run's exported SavedModel on its validation fold (or any fold of
a converted folder): ROC AUC (scikit-learn), the F1 score at the threshold that maximizes it,
and a ROC plot. It writes ``predictions/val_probabilities.csv`` and, under ``metrics/``,
``classifier_metrics.json`` and ``roc_curve.png``. The target is always "the image has a box",
also for a 3-way model (whose opacity column is scored).

How much the probability helps the detectors (gated against ungated competition score) is the
ensemble stage's job: ``tfod-ensemble --classifier_csv ... --gate multiply`` (docs/classify.md).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from tfod import runfolder
from tfod.classify import data
from tfod.classify.predict import (
    load_predictor,
    predict_probabilities,
    write_probabilities,
)
from tfod.classify.runpaths import load_config, val_probabilities
from tfod.errors import BadInput
from tfod.runfolder import RunFolder

log = logging.getLogger(__name__)

METRICS_NAME = "classifier_metrics.json"
ROC_PLOT_NAME = "roc_curve.png"


def best_f1(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """``(f1, threshold)``: the best F1 of "probability >= threshold" over the seen values."""
    order = np.argsort(-probabilities, kind="stable")
    ranked, hits = probabilities[order], labels[order].astype(bool)
    last_of_value = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    tp = np.cumsum(hits)[last_of_value]
    f1 = 2 * tp / (last_of_value + 1 + hits.sum())
    best = int(np.argmax(f1))
    return float(f1[best]), float(ranked[last_of_value[best]])


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """ROC AUC (NaN with one class only), best F1 and its threshold, counts."""
    labels, probabilities = np.asarray(labels, int), np.asarray(probabilities, float)
    both = 0 < labels.sum() < len(labels)
    f1, threshold = best_f1(labels, probabilities)
    return {"roc_auc": float(roc_auc_score(labels, probabilities)) if both else math.nan,
            "f1": f1, "threshold": threshold, "images": int(len(labels)),
            "positives": int(labels.sum())}


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, title: str, path) -> None:
    """The ROC curve with its AUC, drawn with matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(labels, probabilities)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, probabilities):.3f}")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    axes.set(xlabel="false positive rate (negative images)",
             ylabel="true positive rate (images with opacity)", title=title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _labelled_images(globs: list[str], labels: dict[str, int]):
    for patient_id, encoded, has_box in data.read_examples(globs):
        labels[patient_id] = int(has_box)
        yield patient_id, encoded


def evaluate_run(run_dir, data_dir=None, fold: int | None = None, batch_size: int = 16) -> dict:
    """Score run ``run_dir``'s SavedModel on ``fold`` of ``data_dir`` (default: the run's)."""
    config, run = load_config(run_dir), RunFolder(run_dir)
    data_dir = data_dir or config["data_dir"]
    fold = config["fold"] if fold is None else fold
    split = data.split_for(data_dir, fold)
    labels: dict[str, int] = {}
    skipped: list[dict] = []
    probabilities = predict_probabilities(load_predictor(run.root),
                                          _labelled_images(split.eval, labels), skipped, batch_size)
    if skipped:
        raise BadInput(f"{len(skipped)} record(s) could not be scored: {skipped[:3]}", data_dir)
    write_probabilities(probabilities, val_probabilities(run))
    truth = np.array([labels[patient_id] for patient_id in probabilities])
    values = np.fromiter(probabilities.values(), float, len(probabilities))
    metrics = {**classification_metrics(truth, values), "fold": fold, "data_dir": str(data_dir),
               "probabilities": str(val_probabilities(run))}
    run.metrics.mkdir(parents=True, exist_ok=True)
    if 0 < truth.sum() < len(truth):
        plot_roc(truth, values, f"{config['backbone']}, fold {fold}", run.metrics / ROC_PLOT_NAME)
    runfolder.write_json(run.metrics / METRICS_NAME, metrics)
    log.info("%s", format_metrics(metrics))
    return metrics


def format_metrics(metrics: Mapping) -> str:
    return (f"fold {metrics['fold']}: {metrics['images']} images ({metrics['positives']} with "
            f"opacity)  ROC AUC {metrics['roc_auc']:.4f}  best F1 {metrics['f1']:.4f} at "
            f"p >= {metrics['threshold']:.4f}")
