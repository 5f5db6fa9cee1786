"""Benchmark: Convert throughput, passthrough against a decode + re-encode baseline.

Builds N synthetic DICOMs in the real format (JPEG Baseline, 8-bit, 1024x1024: copies of the
16 real RSNA samples, each with its own patientId) plus a labels CSV that gives each copy its
source's rows, then times :func:`tfod.convert.convert` end to end (labels, split, workers,
shards, manifest):

* ``passthrough`` with 1 and with 2 worker processes,
* the baseline: one process that decodes every image and re-encodes it as PNG,

and prints images/s and the ratio (target on 2 cores: passthrough >= 500 images/s and >= 5x
the baseline).

    .venv/bin/python bench/convert.py [--num_images 3000] [--baseline_images 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pydicom

from tfod.convert import convert

REPO = Path(__file__).resolve().parents[1]
RSNA = REPO.parent / "shared" / "data" / "rsna"
SAMPLE_DICOMS = RSNA / "stage_2_train_images_sample"
LABELS_CSV = RSNA / "stage_2_train_labels.csv"


def build_dataset(root: Path, count: int) -> tuple[Path, Path]:
    """``count`` real-format DICOMs in ``root/dicoms`` and their labels CSV."""
    dicom_dir = root / "dicoms"
    dicom_dir.mkdir()
    samples = sorted(SAMPLE_DICOMS.glob("*.dcm"))
    datasets = [pydicom.dcmread(path) for path in samples]
    labels = pd.read_csv(LABELS_CSV)
    rows = []
    for index in range(count):
        source = index % len(samples)
        patient_id = str(uuid.UUID(int=index + 1))
        dataset = datasets[source]
        dataset.PatientID = dataset.PatientName = patient_id
        dataset.save_as(dicom_dir / f"{patient_id}.dcm")
        rows.append(labels[labels.patientId == samples[source].stem].assign(patientId=patient_id))
    labels_csv = root / "labels.csv"
    pd.concat(rows).to_csv(labels_csv, index=False)
    return dicom_dir, labels_csv


def images_per_second(dicom_dir: Path, labels_csv: Path, output_dir: Path, **options) -> float:
    start = time.perf_counter()
    manifest = convert(dicom_dir, output_dir, labels_csv, progress=False, **options)
    elapsed = time.perf_counter() - start
    shutil.rmtree(output_dir)
    return manifest["counts"]["total"]["images"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--baseline_images", type=int, default=64,
                        help="the slow baseline converts only this many")
    args = parser.parse_args()
    import tfod.records  # noqa: F401  (load TensorFlow before timing)

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        print(f"building {args.num_images} DICOMs (JPEG Baseline 1024x1024) in {root}")
        dicom_dir, labels_csv = build_dataset(root, args.num_images)
        small = root / "small"
        small.mkdir()
        for path in sorted(dicom_dir.iterdir())[: args.baseline_images]:
            os.link(path, small / path.name)
        print(f"cores: {os.cpu_count()}")
        rates = {}
        for workers in (1, 2):
            rates[workers] = images_per_second(dicom_dir, labels_csv, root / "out",
                                               image_format="passthrough", workers=workers)
            print(f"passthrough, {workers} worker(s): {rates[workers]:8.1f} images/s "
                  f"({args.num_images} images)")
        # DICOMs without a label row are reported and skipped before reading: label the subset
        small_csv = root / "small.csv"
        table = pd.read_csv(labels_csv)
        table[table.patientId.isin([p.stem for p in small.iterdir()])].to_csv(small_csv,
                                                                               index=False)
        baseline = images_per_second(small, small_csv, root / "out", image_format="png",
                                     workers=1)
        print(f"baseline, decode + PNG re-encode, 1 process: {baseline:8.1f} images/s "
              f"({args.baseline_images} images)")
        best = max(rates.values())
        print(f"ratio passthrough (best) / baseline: {best / baseline:.1f}x (target >= 5x); "
              f"passthrough {'meets' if best >= 500 else 'misses'} 500 images/s")


if __name__ == "__main__":
    main()
