"""tfod-ensemble: fuse several models' detections, fit the fusion on validation, submit.

Fit on out-of-fold validation detections (run folders give their predictions/val.csv):
    tfod-ensemble --detections=runs/ssd-fold0 --detections=runs/frcnn-fold0 \\
        --outside=darknet:yolo/comp4_det_test_opacity.txt --fit \\
        --labels_csv=stage_2_train_labels.csv --fit_dir=ensemble/
Apply the fitted values to the test set's detections and write the Kaggle submission:
    tfod-ensemble --detections=ssd_test.csv --detections=frcnn_test.csv \\
        --outside=darknet:yolo/test_opacity.txt --params=ensemble/ensemble.json \\
        --submission=submission.csv --test_ids=stage_2_sample_submission.csv
Ensemble exported models in one command (they run through the predict stage):
    tfod-ensemble --models=exported/ssd --models=exported/frcnn --input=test_dicoms/ \\
        --submission=submission.csv --test_ids=stage_2_sample_submission.csv
"""
from __future__ import annotations

import math

from absl import flags

from tfod import cli
from tfod.infer import ensemble, outside
from tfod.infer.ensemble import FusionParams
from tfod.infer.ensemble_stage import CsvMapping, EnsembleRequest, run_ensemble

_DETECTIONS = flags.DEFINE_multi_string(
    "detections", [], "A detections CSV (patientId,x,y,width,height,score) or a run folder "
    "(its predictions/val.csv); repeat for each model.")
_MODELS = flags.DEFINE_multi_string(
    "models", [], "An exported model folder, a run folder, or a .onnx/.tflite file of an "
    "export folder; repeat. Runs on --input.")
_INPUT = flags.DEFINE_string(
    "input", None, "DICOM folder, text file of DICOM paths, or TFRecord glob: what --models "
    "predict, and where image sizes come from.")
_TTA = flags.DEFINE_enum("tta", "none", ["none", "hflip"], "Test-time augmentation of --models.")
_OUTSIDE = flags.DEFINE_multi_string(
    "outside", [], "A model trained outside tfod: darknet:PATH (a YOLOv3 `detector valid` "
    "result file) or csv:PATH (read through --columns, --box_format, --normalized); repeat.")
_COLUMNS = flags.DEFINE_string(
    "columns", "", "For csv: outside models: our=their column names, e.g. "
    "patientId=id,x=left,y=top,width=w,height=h,score=conf. Unmapped names are used as is.")
_BOX_FORMAT = flags.DEFINE_enum("box_format", "xywh", list(outside.BOX_FORMATS),
                                "For csv: outside models: x,y,width,height | x1,y1,x2,y2 | "
                                "cx,cy,width,height.")
_NORMALIZED = flags.DEFINE_bool("normalized", False, "For csv: outside models: coordinates "
                                "are in [0, 1] of each image's size.")
_IMAGE_SIZES = flags.DEFINE_string("image_sizes", None, "CSV patientId,width,height of the "
                                   "original images (default: from --input, else 1024x1024).")
_METHOD = flags.DEFINE_enum("method", "wbf", list(ensemble.METHODS),
                            "ensemble-boxes fusion: wbf, avg (wbf with conf_type avg), nmw "
                            "(non-maximum weighted), nms, soft_nms.")
_WEIGHTS = flags.DEFINE_list("weights", None, "One weight per model, in the order models are "
                             "given (--detections, --models, --outside). Default: equal.")
_IOU_THR = flags.DEFINE_float("iou_thr", 0.55, "IoU above which boxes are one object.",
                              lower_bound=0.0, upper_bound=1.0)
cli.require_positive(_IOU_THR)
_SKIP_BOX_THR = flags.DEFINE_float("skip_box_thr", 0.0, "Boxes scoring below this are ignored.",
                                   lower_bound=0.0, upper_bound=1.0)
_CONF_TYPE = flags.DEFINE_enum("conf_type", "avg", list(ensemble.CONF_TYPES),
                               "How wbf scores a fused box.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Minimum score of a submitted box.",
                                lower_bound=0.0, upper_bound=1.0)
_BOX_SCALE = flags.DEFINE_float("box_scale", 1.0, "Scale submitted boxes about their centres.",
                                lower_bound=0.01, upper_bound=10.0)
_OUTPUT = flags.DEFINE_string("output", None, "Write the fused detections CSV here.")
_SUBMISSION = flags.DEFINE_string("submission", None, "Write the Kaggle submission CSV here.")
_TEST_IDS = flags.DEFINE_string("test_ids", None, "CSV with a patientId column (e.g. "
                                "stage_2_sample_submission.csv): the submission's rows.")
_FIT = flags.DEFINE_bool("fit", False, "Search weights, iou_thr, threshold and box scale on "
                         "--labels_csv; write ensemble.json into --fit_dir; apply them.")
_LABELS_CSV = flags.DEFINE_string("labels_csv", None, "Official labels CSV (for --fit).")
_FOLDS_CSV = flags.DEFINE_string("folds_csv", None, "folds.csv: fit on its images only and "
                                 "report the fitted score of each fold.")
_FIT_DIR = flags.DEFINE_string("fit_dir", None, "Where --fit writes ensemble.json and "
                               "threshold_curves.png.")
_PARAMS = flags.DEFINE_string("params", None, "An ensemble.json: apply its fitted values.")
_CLASSIFIER_CSV = flags.DEFINE_string("classifier_csv", None, "CSV patientId,probability of "
                                      "an image-level classifier, for --gate.")
_GATE = flags.DEFINE_string("gate", None, "multiply (box score x probability) or threshold[:t] "
                            "(drop the boxes of images with probability < t, default 0.5).")
_WORKERS = flags.DEFINE_integer("workers", 1, "Fusion processes (more pays on idle cores).",
                                lower_bound=1)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress and the search table.")


def _weights() -> tuple[float, ...] | None:
    if _WEIGHTS.value is None:
        return None
    try:
        weights = tuple(float(w) for w in _WEIGHTS.value)
    except ValueError:
        raise flags.ValidationError(f"--weights {_WEIGHTS.value} are not numbers") from None
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise flags.ValidationError(f"--weights {_WEIGHTS.value} must be finite and positive")
    return weights


def main(argv) -> int:
    del argv
    if _FIT.value and _PARAMS.value:
        raise flags.ValidationError("--fit and --params exclude each other")
    cli.check_outputs(files=[_OUTPUT, _SUBMISSION], folders=[_FIT_DIR])
    request = EnsembleRequest(
        detections=_DETECTIONS.value, models=_MODELS.value, input=_INPUT.value,
        outside=_OUTSIDE.value, image_sizes=_IMAGE_SIZES.value,
        csv_mapping=CsvMapping(outside.parse_columns(_COLUMNS.value), _BOX_FORMAT.value,
                               _NORMALIZED.value),
        params=FusionParams(_METHOD.value, _weights(), _IOU_THR.value, _SKIP_BOX_THR.value,
                            _CONF_TYPE.value),
        threshold=_THRESHOLD.value, box_scale=_BOX_SCALE.value, output=_OUTPUT.value,
        submission=_SUBMISSION.value, test_ids=_TEST_IDS.value, fit=_FIT.value,
        labels_csv=_LABELS_CSV.value, folds_csv=_FOLDS_CSV.value, fit_dir=_FIT_DIR.value,
        params_json=_PARAMS.value, classifier_csv=_CLASSIFIER_CSV.value, gate=_GATE.value,
        tta=_TTA.value, workers=_WORKERS.value, progress=_PROGRESS.value)
    summary = run_ensemble(request)
    print(f"{len(summary['models'])} model(s) over {summary['images']} images -> "
          f"{summary['boxes']} fused boxes ({summary['params']['method']}, threshold "
          f"{summary['threshold']:.2f}, box scale {summary['box_scale']:.2f})")
    for key in ("output", "submission"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
