"""Benchmark: the vectorized competition metric against the slow reference.

Scores realistic noisy predictions (a detector's raw output, see :func:`noisy_predictions`) on all
26,684 images of the official labels, with ``tfod.scoring.metric`` and
``tests/reference_metric``.
Prints both times and the ratio (target >= 50x) for one score and for a full threshold sweep
(where one matching serves every threshold), and the time of the box-scale fit.

    .venv/bin/python bench/metric.py [--seed 0] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import reference_metric  # noqa: E402

from tfod import detections as det  # noqa: E402
from tfod.boxes import scale_xywh  # noqa: E402
from tfod.scoring import metric as score  # noqa: E402

LABELS_CSV = REPO.parent / "shared" / "data" / "rsna" / "stage_2_train_labels.csv"


def noisy_predictions(truth: det.BoxTable, rng: np.random.Generator, false_per_image: float = 8,
                      max_boxes: int = 20) -> det.BoxTable:
    """Detector-like raw output (low-score boxes kept) for every image of ``truth``.

    85% of the true boxes are found, jittered (centre ~8% of the size) and ~8% too large,
    score ~Beta(6, 2); 30% of those get a duplicate, score ~Beta(2, 4); each image gets
    Poisson(``false_per_image``) false positives of opacity-like size, score ~Beta(1, 6);
    at most ``max_boxes`` per image.
    """
    found = rng.random(len(truth.scores)) < 0.85
    duplicate = found & (rng.random(len(found)) < 0.3)
    source = np.concatenate([np.flatnonzero(found), np.flatnonzero(duplicate)])
    hits = truth.boxes[source]
    size = hits[:, 2:] * rng.lognormal(np.log(1.08), 0.15, size=(len(hits), 2))
    centre = hits[:, :2] + hits[:, 2:] / 2 + rng.normal(0, 0.08, (len(hits), 2)) * hits[:, 2:]
    hit_scores = np.concatenate([rng.beta(6, 2, found.sum()), rng.beta(2, 4, duplicate.sum())])
    n_false = rng.poisson(false_per_image, len(truth.ids))
    false_image = np.repeat(np.arange(len(truth.ids)), n_false)
    false_size = np.clip(np.column_stack([rng.normal(220, 60, len(false_image)),
                                          rng.normal(330, 120, len(false_image))]), 40, 700)
    false_xy = rng.uniform(100, 900, (len(false_image), 2)) - false_size / 2
    image = np.concatenate([truth.image[source], false_image])
    boxes = np.concatenate([np.concatenate([centre - size / 2, size], axis=1),
                            np.concatenate([false_xy, false_size], axis=1)])
    scores = np.concatenate([hit_scores, rng.beta(1, 6, len(false_image))])
    order = np.lexsort((-scores, image))  # keep each image's best max_boxes
    image, boxes, scores = image[order], boxes[order], scores[order]
    rank = np.arange(len(image)) - np.searchsorted(image, image)
    keep = rank < max_boxes
    shuffle = rng.permutation(np.count_nonzero(keep))  # files are not sorted by score
    return det.BoxTable(truth.ids, image[keep][shuffle], boxes[keep][shuffle],
                        scores[keep][shuffle])


def as_lists(boxes: dict) -> dict:
    return {key: (image.boxes.tolist(), image.scores.tolist()) for key, image in boxes.items()}


def best_time(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ground_truth = det.read_labels(LABELS_CSV)
    predictions = noisy_predictions(ground_truth, np.random.default_rng(args.seed))
    print(f"{len(ground_truth)} images, {det.count_boxes(ground_truth)} true boxes, "
          f"{det.count_boxes(predictions)} predicted boxes "
          f"(at most {max(map(len, predictions.values()))} on one image)")
    truth_lists, prediction_lists = as_lists(ground_truth), as_lists(predictions)

    for min_score in (0.0, 0.5):
        fast_s, fast = best_time(
            lambda m=min_score: score.competition_score(ground_truth, predictions, m), args.repeats
        )
        slow_s, slow = best_time(
            lambda m=min_score: reference_metric.dataset_score(truth_lists, prediction_lists, m), 1
        )
        assert abs(fast - slow) < 1e-12, (fast, slow)
        print(f"min score {min_score:.2f}: score {fast:.6f}  vectorized {fast_s * 1e3:8.1f} ms  "
              f"reference {slow_s * 1e3:8.1f} ms  ratio {slow_s / fast_s:6.1f}x")

    sweep_s, curve = best_time(
        lambda: score.score_curve(ground_truth, predictions, score.MIN_SCORES), args.repeats
    )
    threshold, best = score.best_threshold(score.MIN_SCORES, curve)
    sampled = score.MIN_SCORES[::10]
    start = time.perf_counter()
    for min_score, value in zip(sampled, curve[::10], strict=True):
        slow = reference_metric.dataset_score(truth_lists, prediction_lists, min_score)
        assert abs(slow - value) < 1e-12, (min_score, slow, value)
    slow_sweep_s = (time.perf_counter() - start) * len(score.MIN_SCORES) / len(sampled)
    print(f"sweep of {len(score.MIN_SCORES)} thresholds: vectorized {sweep_s * 1e3:.1f} ms "
          f"(best {best:.4f} at {threshold:.2f}); reference ~{slow_sweep_s:.1f} s (timed on "
          f"{len(sampled)} of them); ratio ~{slow_sweep_s / sweep_s:.0f}x")
    packed = score.pack(ground_truth, predictions)
    fit_s, fit = best_time(lambda: score.fit_box_scale(packed), 1)
    print(f"box-scale fit over {len(score.BOX_SCALES)} scales x {len(score.MIN_SCORES)} "
          f"thresholds: {fit_s:.2f} s (best scale {fit.scale:.2f}, score {fit.score:.4f})")
    shrunk = det.BoxTable(ground_truth.ids, ground_truth.image,
                          scale_xywh(ground_truth.boxes, 0.8), ground_truth.scores)
    print(f"labels as predictions: {score.competition_score(ground_truth, ground_truth)}; "
          f"labels shrunk to 80%: {score.competition_score(ground_truth, shrunk)}")


if __name__ == "__main__":
    main()
