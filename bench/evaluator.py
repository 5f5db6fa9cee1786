"""Benchmark: the evaluator's pass against tfod-predict on the same records, side by side.

Converts the 16 real RSNA DICOMs linked ``--copies`` times under distinct patientIds (with their
labels) into 2 folds, builds SSD MobileNet v2 at ``--image_size`` px (scratch weights, saved as
a run's checkpoint and exported), then on CPU over fold 0's records times:

* :func:`tfod.infer.predict.predict` of the export (``--batch_size`` images per call), and
* :meth:`tfod.train.evaluator.CheckpointScorer.score` of the checkpoint: one evaluation pass
  (loss, detections, COCO evaluator, competition metric, val detections CSV) at the config's
  ``eval_config.batch_size`` and at 1, without the TensorBoard images of its first
  ``eval_config.num_visualizations`` images: drawing them at the originals' size is a fixed
  cost of a few seconds per pass, which is nothing on a full fold but most of a pass of 64
  images.

Each runs once to trace, then ``--repeats`` times alternating; the best run counts (the cores
may be shared). Prints images/s and the evaluator/predict ratio (target >= 0.70).

    .venv/bin/python bench/evaluator.py [--copies 8] [--repeats 2] [--image_size 256]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from predict import LABELS_CSV, image_folder

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.infer.export import export
from tfod.infer.model import ExportedModel
from tfod.infer.predict import predict
from tfod.runfolder import RunFolder, latest_checkpoint
from tfod.train.evaluator import CheckpointScorer


def copied_labels(folder: Path, output: Path) -> Path:
    """The official label rows of each linked copy, under the copy's patientId."""
    labels = pd.read_csv(LABELS_CSV, dtype=str)
    rows = []
    for path in sorted(folder.glob("*.dcm")):
        original = path.name.split("-", 1)[1][:-4]
        rows.append(labels[labels["patientId"] == original].assign(patientId=path.stem))
    pd.concat(rows).to_csv(output, index=False)
    return output


def scratch_run(root: Path, data: Path, image_size: int, eval_batch: int | None) -> RunFolder:
    """A run folder with an untrained SSD MobileNet v2 checkpoint (step 1) on fold 0."""
    import tensorflow as tf
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    run = RunFolder(root).create()
    overrides = ["eval_config.num_visualizations=0"] + (
        [] if eval_batch is None else [f"eval_config.batch_size={eval_batch}"])
    configs.build_config("ssd_mobilenet_v2", data, 0, run.pipeline_config, image_size=image_size,
                         batch_size=2, num_steps=1, overrides=overrides)
    model_config = config_util.get_configs_from_pipeline_file(str(run.pipeline_config))["model"]
    model = model_builder.build(model_config, is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, image_size, image_size, 3]))
    model.postprocess(model.predict(images, shapes), shapes)  # creates the variables
    step = tf.Variable(1, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    tf.train.CheckpointManager(checkpoint, str(run.root), max_to_keep=1).save(checkpoint_number=1)
    return run


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=8, help="Times the 16 DICOMs are used.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8, help="tfod-predict's batch.")
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU, as stated
    logging.getLogger("tfod.train").setLevel(logging.WARNING)  # no progress lines here
    with tempfile.TemporaryDirectory(prefix="tfod-bench-evaluator-") as scratch:
        root = Path(scratch)
        folder = image_folder(root, args.copies)
        data = root / "data"
        convert(folder, data, copied_labels(folder, root / "labels.csv"), num_folds=2, seed=0,
                workers=1, progress=False)
        records = str(data / "fold0-*.tfrecord")
        run = scratch_run(root / "run", data, args.image_size, None)
        single_run = scratch_run(root / "single", data, args.image_size, 1)
        export(run.root, "latest")
        model = ExportedModel(run.exported)
        scorers = {"evaluator": CheckpointScorer(run.pipeline_config, run),
                   "evaluator, batch 1": CheckpointScorer(single_run.pipeline_config, single_run)}
        count = len(scorers["evaluator"].accumulator.images)
        work = {"tfod-predict": lambda: predict(model, records, batch_size=args.batch_size,
                                                progress=False)}
        for name, scorer in scorers.items():
            checkpoint = latest_checkpoint(scorer.run.root)
            work[name] = lambda scorer=scorer, checkpoint=checkpoint: scorer.score(checkpoint)
        for job in work.values():  # trace every batch shape once
            job()
        best = dict.fromkeys(work, 0.0)
        for _ in range(args.repeats):
            for name, job in work.items():
                best[name] = max(best[name], count / timed(job))
        eval_batch = scorers["evaluator"].batch_size
    print(f"{count} eval-fold records (PNG, 1024x1024), SSD MobileNet v2 at {args.image_size} "
          f"px, CPU, best of {args.repeats}")
    print(f"  tfod-predict (batch {args.batch_size})  {best['tfod-predict']:8.1f} images/s")
    print(f"  evaluator (batch {eval_batch})     {best['evaluator']:8.1f} images/s")
    print(f"  evaluator (batch 1)     {best['evaluator, batch 1']:8.1f} images/s")
    print(f"  evaluator / predict:    {best['evaluator'] / best['tfod-predict']:.2f} "
          "(target >= 0.70)")


if __name__ == "__main__":
    main()
