"""Deployment formats: which model families export to which format, and a runner per format.

``tfod-export --format`` writes, beside the OD API SavedModel of an export folder
(:class:`tfod.runfolder.ExportFolder`), an ONNX model and float and int8 TFLite models
(:mod:`tfod.infer.convert`). :data:`SUPPORT` is the one table of what converts: a model family
is the ``model`` oneof of its ``pipeline.config`` (``ssd`` covers SSD MobileNet and RetinaNet),
and :func:`check_formats` refuses any other pairing with one line, before anything is built.

:func:`load_model` opens any of them for :func:`tfod.infer.predict.predict` by path: an export
folder (or a run folder) is the SavedModel, a ``.onnx`` file runs in ONNX Runtime and a
``.tflite`` file in the TFLite interpreter. Every runner is an :class:`ExportedModel`: it reads
the ``pipeline.config`` of its export folder for the host-side resize, and only its graph call
(:meth:`raw`) differs, so batching, TTA and the output format are the same for every format.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfod.errors import BadInput
from tfod.infer.model import DETECTION_OUTPUTS, ExportedModel, export_folder
from tfod.runfolder import ExportFolder, read_json

SAVEDMODEL, ONNX, TFLITE = "savedmodel", "onnx", "tflite"
FORMATS = (SAVEDMODEL, ONNX, TFLITE)
SERVING_INPUTS = ("float", "encoded")

# model family (pipeline.config's model oneof) -> format -> None (converts) or why it does not
SUPPORT: dict[str, dict[str, str | None]] = {
    "ssd": {SAVEDMODEL: None, ONNX: None, TFLITE: None},
    "faster_rcnn": {
        SAVEDMODEL: None,
        ONNX: "tf2onnx cannot convert Faster R-CNN's second-stage post-processing loops",
        TFLITE: "the OD API's TF2 TFLite path builds SSD and CenterNet graphs only",
    },
    "center_net": {
        SAVEDMODEL: None,
        ONNX: "not converted or tested by tfod yet (its top-k post-processing is untested "
              "under tf2onnx)",
        TFLITE: "not tested by tfod yet (the OD API's CenterNet TFLite graph has its own "
                "preprocessing and outputs)",
    },
}


def check_formats(model_config, formats) -> None:
    """BadInput (one line) unless ``model_config``'s family converts to every one of
    ``formats``; the line names the reason and the families that do convert."""
    family = model_config.WhichOneof("model")
    for name in formats:
        if name not in FORMATS:
            raise BadInput(f"--format must be among {', '.join(FORMATS)}, got {name!r}")
        why = SUPPORT.get(family, {}).get(name, "not a model family tfod knows how to convert")
        if name != SAVEDMODEL and why is not None:  # every family exports a SavedModel
            able = [f for f, table in SUPPORT.items() if table.get(name, "") is None]
            raise BadInput(f"cannot export {family} to {name}: {why}; {name} export supports "
                           f"{', '.join(able)} models", "--format")


def load_model(path) -> ExportedModel:
    """The runner for ``path``: ``*.onnx`` -> ONNX Runtime, ``*.tflite`` -> TFLite, an export
    or run folder -> the SavedModel."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path)
    if suffix == ".tflite":
        return TfliteModel(path)
    return ExportedModel(path)


def model_folder(path) -> Path:
    """The export folder of a model path (a ``.onnx``/``.tflite`` file's own folder)."""
    if Path(path).suffix.lower() in (".onnx", ".tflite"):
        return _model_file(path).parent
    return export_folder(path)


def _model_file(path) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise BadInput("does not exist", path)
    if not ExportFolder(path.parent).pipeline_config.is_file():
        raise BadInput("no pipeline.config beside the model file: keep the file in its "
                       "tfod-export folder", path)
    return path


class FileModel(ExportedModel):
    """A model file in an export folder: its own graph, the folder's ``pipeline.config``."""

    def __init__(self, path):
        self.file = _model_file(path)
        self.folder = self.file.parent
        self._load_detector()
        self._load_config()


class OnnxModel(FileModel):
    """``model.onnx`` (converted by tf2onnx from the SavedModel) in ONNX Runtime on the CPU."""

    def _load_detector(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not its notes on tf2onnx's loop names
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.file), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise BadInput(f"cannot load the ONNX model ({error})", self.file) from error
        inputs = self._session.get_inputs()
        outputs = [output.name for output in self._session.get_outputs()]
        missing = [name for name in DETECTION_OUTPUTS if name not in outputs]
        if len(inputs) != 1 or missing:
            raise BadInput(f"not a tfod detection ONNX model (inputs {[i.name for i in inputs]}"
                           f", outputs lack {missing})", self.file)
        self._input_name = inputs[0].name

    def raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        names = list(DETECTION_OUTPUTS)
        values = self._session.run(names, {self._input_name: np.asarray(images, np.float32)})
        return dict(zip(names, values, strict=True))


class TfliteModel(FileModel):
    """``model.tflite`` or ``model_int8.tflite``: the OD API's TFLite SSD graph (one image per
    call, the feature extractor's input scaling done here as ``export.json`` records it)."""

    def _load_detector(self) -> None:
        import tensorflow as tf

        record = (read_json(ExportFolder(self.folder).export_json, default={}) or {})
        scaling = record.get("tflite_input")
        if not scaling:
            raise BadInput("export.json beside the model has no tflite_input scaling (not "
                           "written by tfod-export --format tflite)", self.file)
        self._scale = np.asarray(scaling["scale"], np.float32)
        self._offset = np.asarray(scaling["offset"], np.float32)
        try:
            self._interpreter = tf.lite.Interpreter(model_path=str(self.file), num_threads=None)
            self._runner = self._interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as error:
            raise BadInput(f"cannot load the TFLite model ({error})", self.file) from error
        self._input_name = next(iter(self._runner.get_input_details()))

    def raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        per_image = [self._run_one(image) for image in np.asarray(images, np.float32)]
        return {name: np.concatenate([out[name] for out in per_image]) for name in per_image[0]}

    def _run_one(self, image: np.ndarray) -> dict[str, np.ndarray]:
        normalized = image[np.newaxis] * self._scale + self._offset
        outputs = self._runner(**{self._input_name: normalized})
        return tflite_detections(outputs)


def tflite_detections(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The OD API TFLite SSD signature's ``output_0..3`` (num_detections, scores, classes,
    boxes: ``SSDModule`` returns its post-processing outputs reversed) -> detection names."""
    names = ("num_detections", "detection_scores", "detection_classes", "detection_boxes")
    return {name: outputs[f"output_{index}"] for index, name in enumerate(names)}
