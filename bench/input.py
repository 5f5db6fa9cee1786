"""Benchmark: tfod's training input pipeline against the OD API's ``inputs.train_input``.

Converts the 16 real RSNA DICOMs (1024 px, passthrough JPEGs) into records, builds the SSD
MobileNet v2 config at each ``--sizes`` px with its own augmentations (horizontal flip, random
crop, brightness, contrast) and ``--batch_size``, and times both pipelines on the same records,
cores and model (whose ``preprocess`` both call): ``--batches`` batches after ``--warmup``,
alternating, ``--repeats`` times, the best run counting (the cores may be shared). Prints
images/s of each and the ratio (target >= 2x), with the model's augmentations and without any.
The reference needs the TF 2.15 stack.

    .venv/bin/python bench/input.py [--sizes 256 512] [--batch_size 8] [--batches 30]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.config import pipeline as configs
from tfod.data.convert import convert
from tfod.train.inputs import train_dataset

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "rsna"
SAMPLE_DICOMS = RSNA / "stage_2_train_images_sample"
LABELS_CSV = RSNA / "stage_2_train_labels.csv"


def images_per_second(dataset, batch_size: int, warmup: int, batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from object_detection import inputs
    from object_detection.builders import model_builder

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        convert(SAMPLE_DICOMS, data, LABELS_CSV, num_folds=2, seed=0, workers=1,
                progress=False)
        for size, augmentations in [(size, kept) for size in args.sizes
                                    for kept in (None, ["none"])]:
            built = configs.build_configs("ssd_mobilenet_v2", data, -1, image_size=size,
                                          batch_size=args.batch_size,
                                          augmentations=augmentations)
            model = model_builder.build(built["model"], is_training=True)
            config = (built["train_config"], built["train_input_config"], built["model"])
            pipelines = {"inputs.train_input": inputs.train_input,
                         "tfod train_dataset": train_dataset}
            best = dict.fromkeys(pipelines, 0.0)
            for _ in range(args.repeats):
                for name, make in pipelines.items():
                    rate = images_per_second(make(*config, model=model), args.batch_size,
                                             args.warmup, args.batches)
                    best[name] = max(best[name], rate)
            steps = [step.WhichOneof("preprocessing_step")
                     for step in built["train_config"].data_augmentation_options]
            print(f"{size} px, batch {args.batch_size}, augmentations "
                  f"{', '.join(steps) or 'none'}")
            for name, rate in best.items():
                print(f"  {name:20s} {rate:7.1f} images/s")
            ratio = best["tfod train_dataset"] / best["inputs.train_input"]
            print(f"  ratio {ratio:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
