"""Convert RSNA DICOMs (+ labels) into sharded OD API TFRecords with patient-level folds.

Training set:
    tfod-convert --dicom_dir=stage_2_train_images --labels_csv=stage_2_train_labels.csv \
        --class_info_csv=stage_2_detailed_class_info.csv --output_dir=tfrecords/rsna
Test set (no labels):
    tfod-convert --dicom_dir=stage_2_test_images --output_dir=tfrecords/rsna_test

Exit status: 0 done, 1 --strict found a skipped or changed input, 2 bad input or flag.
"""
from __future__ import annotations

import sys

from absl import flags

from tfod import cli
from tfod.data import convert
from tfod.data.dicom import DEFAULT_JPEG_QUALITY, IMAGE_FORMATS

FLAGS = flags.FLAGS
flags.DEFINE_string("dicom_dir", None, "Folder of <patientId>.dcm files.")
flags.DEFINE_string("labels_csv", None, "stage_2_train_labels.csv; omit for a test set.")
flags.DEFINE_string("class_info_csv", None,
                    "stage_2_detailed_class_info.csv: stratify folds by the 3-way class.")
flags.DEFINE_string("headers_csv", None,
                    "stage_2_train_dicom_headers.csv(.gz): view position for folds.csv when a "
                    "DICOM lacks it.")
flags.DEFINE_string("output_dir", None, "Where records, folds.csv and manifest.json go.")
flags.DEFINE_integer("num_folds", 5, "Patient-level folds (training set).", lower_bound=1)
flags.DEFINE_integer("seed", 42, "Seed of the fold split.", lower_bound=0)
flags.DEFINE_integer("images_per_shard", convert.DEFAULT_IMAGES_PER_SHARD,
                     "At most this many images per .tfrecord shard.", lower_bound=1)
flags.DEFINE_enum("image_format", "passthrough", IMAGE_FORMATS,
                  "passthrough: copy the DICOM's JPEG frame (others are decoded to PNG); "
                  "png or jpeg: always decode and re-encode.")
flags.DEFINE_integer("max_size", 0, "0 keeps the size; else resize so the longer side has this "
                     "many pixels.", lower_bound=0)
flags.DEFINE_integer("jpeg_quality", DEFAULT_JPEG_QUALITY, "Quality for --image_format=jpeg.",
                     lower_bound=1, upper_bound=100)
flags.DEFINE_bool("verify_frames", True, "Decode each passed-through JPEG frame once and skip "
                  "damaged ones (libjpeg warnings count as damage).")
flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).", lower_bound=1)
flags.DEFINE_bool("box_masks", False, "Also write a box-shaped PNG instance mask per box "
                  "(image/object/mask) for Mask R-CNN.")
flags.DEFINE_bool("strict", False, "Fail (exit status 1) on any skipped or changed input.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv) -> int:
    cli.require(FLAGS["dicom_dir"], FLAGS["output_dir"])
    cli.check_outputs(folders=[FLAGS["output_dir"]])
    manifest = convert.convert(
        FLAGS.dicom_dir, FLAGS.output_dir, FLAGS.labels_csv, FLAGS.class_info_csv,
        FLAGS.headers_csv, num_folds=FLAGS.num_folds, seed=FLAGS.seed,
        images_per_shard=FLAGS.images_per_shard, image_format=FLAGS.image_format,
        max_size=FLAGS.max_size, workers=FLAGS.workers, jpeg_quality=FLAGS.jpeg_quality,
        verify_frames=FLAGS.verify_frames, box_masks=FLAGS.box_masks, strict=FLAGS.strict,
        progress=FLAGS.progress)
    print(convert.format_summary(manifest))
    print(f"records in {FLAGS.output_dir}", file=sys.stderr)
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
