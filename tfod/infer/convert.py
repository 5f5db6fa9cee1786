"""Convert an export folder's model to the deployment formats ``tfod-export --format`` names.

:func:`write_formats` runs inside :func:`tfod.infer.export.export`, on the staging folder that
already holds the OD API SavedModel (``float_image_tensor``), with the chosen checkpoint staged
in its own folder. Each file lands in the export folder under its
:class:`~tfod.runfolder.ExportFolder` name, and the returned fields go into ``export.json``:

* ``onnx`` -> ``model.onnx``: tf2onnx's converter (its command line, in a child process, so
  its graph rewriting does not stay in this process) on the SavedModel's ``serving_default``
  signature at opset :data:`ONNX_OPSET`; the batch dimension stays dynamic and the OD API's
  post-processing (box decoding, NMS) is inside the graph.
* ``tflite`` -> ``model.tflite`` (float) and ``model_int8.tflite`` (post-training int8,
  calibrated on the first ``calibration_images`` images of the run's training records): the
  OD API's TF2 TFLite path (``export_tflite_graph_lib_tf2.export_tflite_model``: an
  intermediate SavedModel whose post-processing becomes TFLite's
  ``TFLite_Detection_PostProcess`` op) and ``tf.lite.TFLiteConverter``. That graph takes the
  feature extractor's *preprocessed* input at batch 1: ``export.json``'s ``tflite_input`` holds
  the per-channel ``scale`` and ``offset`` of that preprocessing, measured on the built model,
  which :class:`tfod.infer.formats.TfliteModel` applies on the host.
* ``serving_input="encoded"`` -> ``serving/1/``: the same checkpoint exported by the OD API with
  the ``encoded_image_string_tensor`` input (a batch of PNG or JPEG bytes), in TF Serving's
  versioned layout (``--model_base_path`` is ``serving/``).

Which model families convert to what is :data:`tfod.infer.formats.SUPPORT`, checked before
anything is built.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.errors import RunFailed
from tfod.infer.formats import ONNX, SAVEDMODEL, TFLITE
from tfod.infer.inputs import decode_encoded
from tfod.infer.model import ExportedModel
from tfod.runfolder import ExportFolder

ONNX_OPSET = 17
ENCODED_INPUT_TYPE = "encoded_image_string_tensor"
DEFAULT_CALIBRATION_IMAGES = 100


def write_formats(pipeline, checkpoint_dir: Path, staging: Path, formats, serving_input: str,
                  calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Write the requested ``formats`` (and the encoded serving SavedModel) into ``staging``;
    return the ``export.json`` fields that describe them."""
    folder = ExportFolder(staging)
    written = {SAVEDMODEL: folder.saved_model.name}
    fields: dict = {}
    if ONNX in formats:
        to_onnx(folder)
        written[ONNX] = folder.onnx.name
    if TFLITE in formats:
        fields["tflite_input"] = to_tflite(pipeline, checkpoint_dir, folder, calibration_images)
        written[TFLITE] = folder.tflite.name
        written["tflite_int8"] = folder.tflite_int8.name
        fields["calibration_images"] = calibration_images
    if serving_input == "encoded":
        export_encoded(pipeline, checkpoint_dir, folder)
        written["serving"] = str(folder.serving_saved_model.relative_to(folder.root))
    fields["formats"] = written
    return fields


def to_onnx(folder: ExportFolder, opset: int = ONNX_OPSET) -> Path:
    """``folder.saved_model`` -> ``folder.onnx`` with tf2onnx (RunFailed with its last lines)."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(folder.saved_model),
               "--signature_def", "serving_default", "--opset", str(opset),
               "--output", str(folder.onnx)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not folder.onnx.is_file():
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RunFailed(f"tf2onnx could not convert {folder.saved_model}:\n{tail}")
    return folder.onnx


def to_tflite(pipeline, checkpoint_dir: Path, folder: ExportFolder, calibration_images: int
              ) -> dict:
    """The OD API TFLite graph of the checkpoint -> ``folder.tflite`` and
    ``folder.tflite_int8``; returns the input scaling (``tflite_input`` of ``export.json``)."""
    import tensorflow as tf
    from object_detection import export_tflite_graph_lib_tf2

    scaling = input_scaling(pipeline)
    nms = pipeline.model.ssd.post_processing.batch_non_max_suppression
    with tempfile.TemporaryDirectory(prefix=".tflite-graph-", dir=folder.root) as graph:
        export_tflite_graph_lib_tf2.export_tflite_model(
            pipeline, str(checkpoint_dir), graph, nms.max_total_detections, False)
        saved_model = str(ExportFolder(graph).saved_model)  # the OD API's layout there too
        folder.tflite.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved_model).convert())
        images = calibration_set(pipeline, folder, calibration_images, scaling)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
        folder.tflite_int8.write_bytes(converter.convert())
    return scaling


def input_scaling(pipeline) -> dict:
    """Per-channel ``scale`` and ``offset`` with ``preprocess(x) == x * scale + offset`` for
    the model's feature extractor, measured on the built model at its input size."""
    import tensorflow as tf
    from object_detection.builders import model_builder

    from tfod.infer.model import fixed_input_size

    height, width = fixed_input_size(pipeline.model)
    model = model_builder.build(pipeline.model, is_training=False)

    def preprocessed(value: float) -> np.ndarray:
        image = tf.fill([1, height, width, 3], value)
        return model.preprocess(image)[0].numpy()[0, height // 2, width // 2]

    offset = preprocessed(0.0)
    scale = preprocessed(1.0) - offset
    if not np.allclose(preprocessed(255.0), 255.0 * scale + offset, atol=1e-4):
        raise RunFailed("the model's preprocessing is not a per-channel affine map of the "
                        "pixels; the TFLite graph cannot be fed from the host")
    return {"scale": scale.tolist(), "offset": offset.tolist()}


def calibration_set(pipeline, folder: ExportFolder, count: int, scaling: dict) -> list:
    """The first ``count`` images of the training records, resized as for prediction and
    preprocessed as the TFLite graph takes them (float32 ``h x w x 3``)."""
    from tfod.data.records import decode_example, read_records

    patterns = list(pipeline.train_input_reader.tf_record_input_reader.input_path)
    records = read_records(patterns, limit=count)
    if not records:
        raise RunFailed(f"no training records match {patterns} to calibrate the int8 model")
    model = ExportedModel(folder.root)
    scale, offset = (np.asarray(scaling[key], np.float32) for key in ("scale", "offset"))
    return [model.resize(decode_encoded(decode_example(record)["encoded"])) * scale + offset
            for record in records]


def export_encoded(pipeline, checkpoint_dir: Path, folder: ExportFolder) -> Path:
    """The OD API export with the ``encoded_image_string_tensor`` input -> ``serving/1/``."""
    from object_detection import exporter_lib_v2

    with tempfile.TemporaryDirectory(prefix=".encoded-", dir=folder.root) as staging:
        exporter_lib_v2.export_inference_graph(ENCODED_INPUT_TYPE, pipeline,
                                               str(checkpoint_dir), staging)
        folder.serving.mkdir()
        shutil.move(str(ExportFolder(staging).saved_model), folder.serving_saved_model)
    return folder.serving_saved_model
