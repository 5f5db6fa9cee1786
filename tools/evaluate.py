"""tfod-evaluate: score a detections CSV with the competition metric; write metrics and plots.

tfod-evaluate --detections runs/ssd-fold0/predictions/val.csv \\
    --labels_csv ../shared/data/rsna/stage_2_train_labels.csv \\
    --folds_csv tfrecords/rsna/folds.csv --fold 0 \\
    --output_dir runs/ssd-fold0/metrics --dicom_dir data/stage_2_train_images

Writes metrics.json, threshold_curve.png, box_scale_curve.png, box_errors.png and, with
--dicom_dir, gallery/index.html into --output_dir, and prints a short table.
"""

from absl import app, flags

from tfod.scoring import metric as score

_DETECTIONS = flags.DEFINE_string("detections", None,
                                  "Detections CSV: patientId,x,y,width,height,score.")
_LABELS_CSV = flags.DEFINE_string("labels_csv", None,
                                  "Official labels CSV: patientId,x,y,width,height,Target.")
_FOLDS_CSV = flags.DEFINE_string("folds_csv", None, "folds.csv of a converted folder; "
                                 "with --fold, score that fold's images only.")
_FOLD = flags.DEFINE_integer("fold", None, "The fold to score (needs --folds_csv).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for metrics.json, plots, gallery.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Minimum detection score; default: the best "
                                "of 0.05..0.95.", lower_bound=0.0, upper_bound=1.0)
_BOX_SCALE = flags.DEFINE_float("box_scale", None, "Scale predicted boxes about their centres by "
                                "this; default: the best of 0.70..1.10.", lower_bound=0.0)
_DICOM_DIR = flags.DEFINE_string("dicom_dir", None, "Folder of <patientId>.dcm; draws the "
                                 "validation gallery.")
_GALLERY_LIMIT = flags.DEFINE_integer("gallery_limit", None, "Draw only this many images, the "
                                      "worst first (default: all).", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in (_DETECTIONS, _LABELS_CSV, _OUTPUT_DIR):
        if flag.value is None:
            raise app.UsageError(f"--{flag.name} is required")
    if (_FOLDS_CSV.value is None) != (_FOLD.value is None):
        raise app.UsageError("--folds_csv and --fold go together")
    metrics = score.evaluate_files(
        _DETECTIONS.value, _LABELS_CSV.value, _OUTPUT_DIR.value,
        folds_csv=_FOLDS_CSV.value, fold=_FOLD.value, threshold=_THRESHOLD.value,
        box_scale=_BOX_SCALE.value, dicom_dir=_DICOM_DIR.value,
        gallery_limit=_GALLERY_LIMIT.value,
    )
    print(score.format_table(metrics))
    print(f"written to {_OUTPUT_DIR.value}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
