"""tfod-predict: run an exported detector on DICOMs or TFRecords; write a detections CSV.

tfod-predict --model runs/ssd_mobilenet_v2-fold0 --input data/stage_2_test_images \\
    --output predictions/test.csv --submission predictions/submission.csv --threshold 0.3
tfod-predict --model exported/ssd --input 'tfrecords/rsna/fold0-*.tfrecord' --output val.csv
tfod-predict --model exported/ssd --input dicoms.txt --output out.csv --tta hflip

Every input image is in the CSV (no box: one row with empty fields); unreadable inputs are
printed and listed in <output>.skipped.json. See docs/predict.md.
"""
from absl import flags

from tfod import cli
from tfod.infer import predict

_MODEL = flags.DEFINE_string("model", None, "An exported folder (tfod-export), or a run folder "
                             "(its exported/).")
_INPUT = flags.DEFINE_string("input", None, "A DICOM folder, a text file of DICOM paths (one per "
                             "line), or a TFRecord glob from tfod-convert.")
_OUTPUT = flags.DEFINE_string("output", None, "Detections CSV: patientId,x,y,width,height,score.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per model call.", lower_bound=1)
_MIN_SCORE = flags.DEFINE_float("min_score", 0.0, "Drop boxes scoring below this.",
                                lower_bound=0.0, upper_bound=1.0)
_TTA = flags.DEFINE_enum("tta", "none", list(predict.TTA_MODES), "Test-time augmentation: "
                         "hflip also predicts the mirrored image and fuses both (WBF).")
_SUBMISSION = flags.DEFINE_string("submission", None, "Also write a Kaggle submission CSV here.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Minimum score of a box in the submission "
                                "(default: the evaluator's best threshold for the exported "
                                "checkpoint, from export.json; else 0.5).",
                                lower_bound=0.0, upper_bound=1.0)
FALLBACK_THRESHOLD = 0.5
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar (images/s).")


def main(argv) -> int:
    del argv
    cli.require(_MODEL, _INPUT, _OUTPUT)
    cli.check_outputs(files=[_OUTPUT, _SUBMISSION])
    detections, skipped = predict.predict(
        _MODEL.value, _INPUT.value, batch_size=_BATCH_SIZE.value, min_score=_MIN_SCORE.value,
        tta=_TTA.value, progress=_PROGRESS.value)
    threshold = _THRESHOLD.value
    if threshold is None:
        threshold = predict.export_threshold(_MODEL.value)
    if threshold is None:
        threshold = FALLBACK_THRESHOLD
    written = predict.write_predictions(detections, skipped, _OUTPUT.value, _SUBMISSION.value,
                                        threshold)
    print(f"{len(detections)} image(s), {sum(map(len, detections.values()))} box(es)")
    if skipped:
        print(predict.format_skipped(skipped))
    print("written: " + ", ".join(map(str, written)))
    if _SUBMISSION.value:
        print(f"submission boxes score >= {threshold}")
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
