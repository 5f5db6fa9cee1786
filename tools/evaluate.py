"""tfod-evaluate: score detections with the competition metric; write metrics and plots.

tfod-evaluate --detections runs/ssd-fold0/predictions/val.csv \\
    --labels_csv ../shared/data/rsna/stage_2_train_labels.csv \\
    --folds_csv tfrecords/rsna/folds.csv --fold 0 \\
    --output_dir runs/ssd-fold0/metrics --dicom_dir data/stage_2_train_images
tfod-evaluate --detections submission.csv --images ids.csv --labels_csv ... --output_dir ...

The detections are a detections CSV or a Kaggle submission (told apart by the header). Writes
metrics.json (first), threshold_curve.png, box_scale_curve.png, box_errors.png and, with
--dicom_dir, gallery/index.html into --output_dir (this stage's earlier outputs there are
removed first), and prints a short table: the score of the detections at their best threshold
(or at --threshold), and beside it the score with the fitted box scale. See docs/score.md.
"""

from absl import flags

from tfod import cli
from tfod.scoring import stage

_DETECTIONS = flags.DEFINE_string(
    "detections", None, "Detections CSV (patientId,x,y,width,height,score) or Kaggle "
    "submission (patientId,PredictionString).")
_LABELS_CSV = flags.DEFINE_string("labels_csv", None,
                                  "Official labels CSV: patientId,x,y,width,height,Target.")
_FOLDS_CSV = flags.DEFINE_string("folds_csv", None, "folds.csv of a converted folder; "
                                 "with --fold, score that fold's images only.")
_FOLD = flags.DEFINE_integer("fold", None, "The fold to score (needs --folds_csv).",
                             lower_bound=0)
_IMAGES = flags.DEFINE_string(
    "images", None, "The images to score: one patientId per line, or any CSV with a patientId "
    "column; an image without a detections row counts as an empty prediction.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for metrics.json, plots, gallery.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Minimum detection score; default: the best "
                                "of 0.05..0.95.", lower_bound=0.0, upper_bound=1.0)
_BOX_SCALE = flags.DEFINE_float("box_scale", None, "Scale predicted boxes about their centres by "
                                "this (> 0) for the score; default: unscaled (1). The best of "
                                "0.70..1.10 is reported apart as the fitted scale.")
cli.require_positive(_BOX_SCALE)
_DICOM_DIR = flags.DEFINE_string("dicom_dir", None, "Folder of <patientId>.dcm; draws the "
                                 "validation gallery.")
_GALLERY_LIMIT = flags.DEFINE_integer(
    "gallery_limit", stage.GALLERY_LIMIT, "Draw only this many images, the worst first; the page "
    "counts the images left out (0: draw all).", lower_bound=0)


def main(argv):
    del argv  # checked by cli.runner
    cli.require(_DETECTIONS, _LABELS_CSV, _OUTPUT_DIR)
    cli.check_outputs(folders=[_OUTPUT_DIR])
    metrics = stage.score_files(
        _DETECTIONS.value, _LABELS_CSV.value, _OUTPUT_DIR.value,
        folds_csv=_FOLDS_CSV.value, fold=_FOLD.value, images=_IMAGES.value,
        threshold=_THRESHOLD.value, box_scale=_BOX_SCALE.value, dicom_dir=_DICOM_DIR.value,
        gallery_limit=_GALLERY_LIMIT.value,
    )
    print(stage.format_table(metrics))
    print(f"written to {_OUTPUT_DIR.value}")
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
