"""tfod-export: export a run's checkpoint as a batchable OD API detection SavedModel.

tfod-export --run_dir runs/ssd_mobilenet_v2-fold0                       # best -> <run>/exported
tfod-export --run_dir runs/ssd_mobilenet_v2-fold0 --checkpoint latest --output_dir /models/ssd
NMS=model.ssd.post_processing.batch_non_max_suppression   # 50 boxes: raise both limits
tfod-export --run_dir runs/ssd_mobilenet_v2-fold0 --checkpoint ckpt-12 \\
    --config_override $NMS.score_threshold=0.001 --config_override $NMS.max_total_detections=50 \\
    --config_override $NMS.max_detections_per_class=50

tfod-export --run_dir runs/ssd_mobilenet_v2-fold0 --format onnx --format tflite \\
    --calibration_images 200 --serving_input encoded

Writes saved_model/, pipeline.config, checkpoint/ and export.json; with --format also
model.onnx, model.tflite and model_int8.tflite; with --serving_input encoded also serving/1/
for TF Serving. See docs/predict.md.
"""
import json

from absl import flags

from tfod import cli
from tfod.infer import convert, export, formats

_RUN_DIR = flags.DEFINE_string("run_dir", None, "The run folder to export from.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "best (the evaluator's best by "
                                  "rsna/score), latest, or ckpt-N.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Export folder (default "
                                  "<run_dir>/exported); an earlier export there is replaced.")
_CONFIG_OVERRIDE = flags.DEFINE_multi_string(
    "config_override", [], "Export-time pipeline field, key=value (repeatable), e.g. "
    "model.ssd.post_processing.batch_non_max_suppression.score_threshold=0.001.")

_FORMAT = flags.DEFINE_multi_enum(
    "format", [formats.SAVEDMODEL], formats.FORMATS, "Formats to write (repeatable): "
    "savedmodel (always written), onnx (model.onnx, tf2onnx), tflite (model.tflite and int8 "
    "model_int8.tflite). ONNX and TFLite convert SSD models only (see docs/predict.md).")
_SERVING_INPUT = flags.DEFINE_enum(
    "serving_input", "float", list(formats.SERVING_INPUTS), "encoded: also write serving/1/, "
    "a SavedModel taking base64 PNG/JPEG bytes (encoded_image_string_tensor) for TF Serving.")
_CALIBRATION_IMAGES = flags.DEFINE_integer(
    "calibration_images", convert.DEFAULT_CALIBRATION_IMAGES, "Training-record images that "
    "calibrate the int8 TFLite model (--format tflite).", lower_bound=1)


def main(argv) -> int:
    del argv
    cli.require(_RUN_DIR)
    cli.check_outputs(folders=[_OUTPUT_DIR])
    record = export.export(_RUN_DIR.value, _CHECKPOINT.value, _OUTPUT_DIR.value,
                           _CONFIG_OVERRIDE.value, _FORMAT.value, _SERVING_INPUT.value,
                           _CALIBRATION_IMAGES.value)
    shown = {key: record[key] for key in ("checkpoint", "step", "rsna/score", "rsna/threshold",
                                          "image_size", "smoke_test", "formats")}
    print(json.dumps(shown, indent=2))
    print(f"exported to {record['output_dir']}")
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
