"""Benchmark: fuse 3 models over the 26,684 training images, and the full --fit search.

The models are noisy detections made from the official labels (``tests/noisy_models.py``,
seeds 1, 2, 3, qualities 0.9, 0.7, 0.5). Prints the time and images/s of one fusion pass (one
process and a pool of 2), and of the whole fit (``--workers`` processes, default 1) with its
number of fusions, against the targets: one pass <= 30 s, the fit <= 5 minutes, on 2 cores.

    .venv/bin/python bench/ensemble.py [--workers 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from noisy_models import noisy_model  # noqa: E402

from tfod import detections as det  # noqa: E402
from tfod.infer import ensemble, fit  # noqa: E402
from tfod.infer.ensemble import FusionParams  # noqa: E402

LABELS_CSV = REPO.parent / "shared" / "data" / "rsna" / "stage_2_train_labels.csv"
PASS_TARGET_S, FIT_TARGET_S = 30.0, 300.0


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="processes of the fit's fusions")
    args = parser.parse_args()
    truth = det.read_labels(LABELS_CSV)
    models = [noisy_model(truth, seed, quality) for seed, quality in ((1, 0.9), (2, 0.7), (3, 0.5))]
    images = len(truth)
    print(f"{images} images, {len(models)} models, "
          f"{sum(det.count_boxes(m) for m in models)} boxes in all; {os.cpu_count()} cores")
    one_s, fused = timed(lambda: ensemble.fuse(models, None, FusionParams()))
    print(f"one fusion pass, 1 process:  {one_s:6.1f} s  {images / one_s:8.0f} images/s  "
          f"({det.count_boxes(fused)} fused boxes)")
    pool = ensemble.worker_pool(2)
    try:
        ensemble.fuse(models, None, FusionParams(), pool=pool)  # the workers start up
        pool_s, _ = timed(lambda: ensemble.fuse(models, None, FusionParams(), pool=pool))
    finally:
        if pool is not None:
            pool.close()
    print(f"one fusion pass, 2 workers:  {pool_s:6.1f} s  {images / pool_s:8.0f} images/s")
    best_s = min(one_s, pool_s)
    print(f"target one pass <= {PASS_TARGET_S:.0f} s: {PASS_TARGET_S / best_s:.1f}x inside")
    fit_s, result = timed(lambda: fit.fit(models, ["m1", "m2", "m3"], truth, None,
                                          FusionParams(), workers=args.workers))
    print(fit.format_summary(result))
    print(f"fit: {result.fusions} fusions (each swept over {len(fit.MIN_SCORES)} thresholds x "
          f"{len(fit.COARSE_SCALES)} box scales without refusing) in {fit_s:.1f} s, "
          f"{fit_s / result.fusions:.1f} s per fusion (target <= {FIT_TARGET_S:.0f} s: "
          f"{FIT_TARGET_S / fit_s:.1f}x inside)")


if __name__ == "__main__":
    main()
