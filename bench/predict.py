"""Benchmark: batched prediction against one model call per image, and the cost of flip TTA.

Builds a fresh (untrained) SSD MobileNet v2 at 256 px, saves it as the latest checkpoint of a
scratch run folder and exports it with :func:`tfod.infer.export.export` (the real export
path), then times :func:`tfod.infer.predict.predict` on CPU over the 16 real RSNA DICOMs
repeated (linked under distinct patientIds), all in one run with the same model and images:

* ``--batch_size`` images per model call (default 8),
* one image per model call (batch size 1),
* batched with ``tta="hflip"`` (two model calls per batch and a weighted box fusion per image),
* and the model calls alone (preprocessed images in memory), batched and one by one;
* then each deployment format of the same export (``--format onnx tflite``: the SavedModel,
  ONNX Runtime, float and int8 TFLite), batched end to end and its model calls alone.

Each setting runs ``--repeats`` times, alternating, and the best run counts (the cores may be
shared). Prints images/s, the batched/single ratio (target >= 2x) and the TTA cost.

    .venv/bin/python bench/predict.py [--repeats 16] [--batch_size 8] [--image_size 256]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.data.dicom import load_image_8bit
from tfod.infer.export import export
from tfod.infer.formats import FORMATS, load_model
from tfod.infer.model import ExportedModel
from tfod.infer.predict import predict
from tfod.runfolder import ExportFolder, RunFolder

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "rsna"
SAMPLE_DICOMS = RSNA / "stage_2_train_images_sample"
LABELS_CSV = RSNA / "stage_2_train_labels.csv"


def fresh_export(root: Path, image_size: int) -> Path:
    """An exported, untrained SSD MobileNet v2 at ``image_size`` px (scratch weights)."""
    import tensorflow as tf
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    data = root / "data"
    convert(SAMPLE_DICOMS, data, LABELS_CSV, num_folds=2, seed=0, workers=1, progress=False)
    run = RunFolder(root / "run").create()
    configs.build_config("ssd_mobilenet_v2", data, 0, run.pipeline_config,
                         image_size=image_size, batch_size=2, num_steps=1)
    model_config = config_util.get_configs_from_pipeline_file(str(run.pipeline_config))["model"]
    model = model_builder.build(model_config, is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, image_size, image_size, 3]))
    model.postprocess(model.predict(images, shapes), shapes)  # creates the variables
    checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, str(run.root), max_to_keep=1).save()
    export(run.root, "latest", formats=FORMATS, calibration_images=16)
    return run.exported


def image_folder(root: Path, copies: int) -> Path:
    """The 16 sample DICOMs linked ``copies`` times under distinct names (patientIds)."""
    folder = root / "images"
    folder.mkdir()
    for copy in range(copies):
        for path in sorted(SAMPLE_DICOMS.glob("*.dcm")):
            (folder / f"{copy:03d}-{path.name}").symlink_to(path)
    return folder


def images_per_second(model, folder: Path, count: int, **options) -> float:
    started = time.perf_counter()
    detections, skipped = predict(model, folder, progress=False, **options)
    assert len(detections) == count and not skipped
    return count / (time.perf_counter() - started)


def model_only(model: ExportedModel, batch_size: int, repeats: int) -> tuple[float, float]:
    """Images/s of the model calls alone on preprocessed sample images: batched, one by one."""
    images = np.stack([model.resize(load_image_8bit(path))
                       for path in sorted(SAMPLE_DICOMS.glob("*.dcm"))[:batch_size]])
    model(images), model(images[:1])  # trace both batch shapes
    batched = single = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        model(images)
        batched = max(batched, len(images) / (time.perf_counter() - started))
        started = time.perf_counter()
        for image in images:
            model(image[np.newaxis])
        single = max(single, len(images) / (time.perf_counter() - started))
    return batched, single


def format_rates(export_folder: ExportFolder, folder: Path, count: int, args
                 ) -> dict[str, tuple[float, float]]:
    """Per format: best images/s of batched prediction end to end, and of its model calls."""
    paths = {"savedmodel": export_folder.root, "onnx": export_folder.onnx,
             "tflite": export_folder.tflite, "tflite_int8": export_folder.tflite_int8}
    models = {name: load_model(path) for name, path in paths.items()}
    for model in models.values():
        predict(model, SAMPLE_DICOMS, progress=False, batch_size=args.batch_size)  # warm up
    best = {name: (0.0, 0.0) for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            rate = images_per_second(model, folder, count, batch_size=args.batch_size)
            alone = model_only(model, args.batch_size, 1)[0]
            best[name] = (max(best[name][0], rate), max(best[name][1], alone))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="Times the 16 DICOMs are used.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU, as stated
    with tempfile.TemporaryDirectory(prefix="tfod-bench-predict-") as scratch:
        root = Path(scratch)
        model = ExportedModel(fresh_export(root, args.image_size))
        folder = image_folder(root, args.copies)
        count = 16 * args.copies
        settings = {"batched": {"batch_size": args.batch_size}, "single": {"batch_size": 1},
                    "batched+hflip": {"batch_size": args.batch_size, "tta": "hflip"}}
        for options in settings.values():  # trace every batch shape once
            predict(model, SAMPLE_DICOMS, progress=False, **options)
        best = dict.fromkeys(settings, 0.0)
        for _ in range(args.repeats):
            for name, options in settings.items():
                best[name] = max(best[name], images_per_second(model, folder, count, **options))
        calls = model_only(model, args.batch_size, 3 * args.repeats)
        per_format = format_rates(ExportFolder(model.folder), folder, count, args)
    print(f"{count} DICOMs (1024x1024), SSD MobileNet v2 at {args.image_size} px, CPU, "
          f"best of {args.repeats}")
    for name, rate in best.items():
        print(f"  {name:<14} {rate:8.1f} images/s")
    print(f"  batched / single:        {best['batched'] / best['single']:.2f}x (target >= 2x)")
    print(f"  model calls alone: batched {calls[0]:.1f}, single {calls[1]:.1f} images/s, "
          f"{calls[0] / calls[1]:.2f}x (decoding 1024x1024 DICOMs is the rest)")
    print(f"  hflip TTA cost:          {best['batched'] / best['batched+hflip']:.2f}x the time "
          "of batched prediction")
    print(f"  formats, batch {args.batch_size} (TFLite runs one image per call):")
    reference_rate, reference_alone = per_format["savedmodel"]
    for name, (rate, alone) in per_format.items():
        print(f"    {name:<12} {rate:8.1f} images/s end to end "
              f"({rate / reference_rate:.2f}x the SavedModel), model calls alone "
              f"{alone:8.1f} images/s ({alone / reference_alone:.2f}x)")


if __name__ == "__main__":
    main()
