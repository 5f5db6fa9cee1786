"""Synthetic detectors made from the official labels, for the ensemble's tests and bench.

Each model finds a share of the true boxes (jittered, score high) and adds false positives of
opacity-like size (score low); a lower ``quality`` finds fewer, jitters more and scores less
cleanly. Models drawn with different seeds err independently, which is what makes an
ensemble of them beat each one.
"""
from __future__ import annotations

import numpy as np

from tfod.detections import BoxTable


def noisy_model(truth: BoxTable, seed: int, quality: float = 1.0,
                false_per_image: float = 1.5, image_size: float = 1024.0) -> BoxTable:
    """Detections for every image of ``truth`` (pixel boxes); ``quality`` in (0, 1]."""
    rng = np.random.default_rng(seed)
    found = np.flatnonzero(rng.random(len(truth.scores)) < 0.55 + 0.35 * quality)
    hits = truth.boxes[found]
    jitter = 0.16 - 0.1 * quality
    size = hits[:, 2:] * rng.lognormal(0.0, jitter, size=(len(hits), 2))
    centre = hits[:, :2] + hits[:, 2:] / 2 + rng.normal(0, jitter, (len(hits), 2)) * hits[:, 2:]
    hit_scores = np.clip(rng.normal(0.45 + 0.3 * quality, 0.18, len(hits)), 0.01, 0.99)
    n_false = rng.poisson(false_per_image * (1.5 - 0.5 * quality), len(truth.ids))
    false_image = np.repeat(np.arange(len(truth.ids)), n_false)
    false_size = np.clip(rng.normal(0.22, 0.06, (len(false_image), 2)), 0.05, 0.6) * image_size
    false_xy = rng.uniform(0.1, 0.9, (len(false_image), 2)) * image_size - false_size / 2
    false_scores = np.clip(rng.beta(1.5, 5, len(false_image)) * (1.3 - 0.3 * quality), 0, 0.99)
    image = np.concatenate([truth.image[found], false_image])
    boxes = np.concatenate([np.concatenate([centre - size / 2, size], axis=1),
                            np.concatenate([false_xy, false_size], axis=1)])
    scores = np.concatenate([hit_scores, false_scores])
    return BoxTable(truth.ids, image, boxes, scores)
