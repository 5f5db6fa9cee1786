"""An exported detector, loaded once: resize an image for it, run a batch, get normalized boxes.

``tfod-export`` writes the OD API's export folder (``saved_model/``, ``pipeline.config``,
``checkpoint/``) with the ``float_image_tensor`` signature: a float32 ``[batch, height, width,
3]`` tensor of 0..255 pixels in, ``detection_boxes`` (normalized ``ymin, xmin, ymax, xmax``),
``detection_scores``, ``detection_classes`` and ``num_detections`` out.

Images of different sizes cannot share one batch tensor, so :meth:`ExportedModel.resize`
resizes each image on the host with the model's own image resizer, built from the exported
``pipeline.config`` by the OD API's ``image_resizer_builder``: the function the model applies
in its graph and the evaluator applies to the records. For a ``fixed_shape_resizer`` (SSD,
CenterNet) every image then has the model's input size and the in-graph resize is an identity;
for an aspect-keeping resizer the image is left as it is and :mod:`tfod.infer.predict` batches
images of one shape together. Normalized boxes are relative to the image fed, which is the
original image stretched, so they map back to any original size by multiplying.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.errors import BadInput
from tfod.runfolder import ExportFolder, RunFolder

DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
SIGNATURE = "serving_default"


def export_folder(path) -> Path:
    """An export folder, or a run folder whose ``exported/`` is one -> the export folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput("does not exist", path)
    for folder in (path, RunFolder(path).exported):
        if (ExportFolder(folder).saved_model / "saved_model.pb").is_file():
            return folder
    raise BadInput("not an exported detector (no saved_model/saved_model.pb here or in "
                   "exported/): export one with tfod-export", path)


def fixed_input_size(model_config) -> tuple[int, int] | None:
    """``(height, width)`` of a ``fixed_shape_resizer``; None for a resizer without one size."""
    resizer = getattr(model_config, model_config.WhichOneof("model")).image_resizer
    if resizer.WhichOneof("image_resizer_oneof") != "fixed_shape_resizer":
        return None
    return resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width


class ExportedModel:
    """A detection SavedModel exported by ``tfod-export``, loaded once and called per batch."""

    def __init__(self, path):
        self.folder = export_folder(path)
        self._load_detector()
        self._load_config()

    def _load_detector(self) -> None:
        """Load the detection graph (here the SavedModel; other formats override this)."""
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(ExportFolder(self.folder).saved_model))
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise BadInput(f"cannot load the SavedModel ({error})", self.folder) from error
        self._loaded = loaded  # the signature's variables live as long as this object
        self._detect, self._input_name = _detection_signature(loaded, self.folder)

    def _load_config(self) -> None:
        """The exported ``pipeline.config``: the model's input size and image resizer."""
        from object_detection.builders import image_resizer_builder

        from tfod.config.pipeline import read_configs

        config_path = ExportFolder(self.folder).pipeline_config
        if not config_path.is_file():
            raise BadInput("no pipeline.config in this export folder (not an OD API export)",
                           self.folder)
        self.model_config = read_configs(config_path)["model"]
        self.input_size = fixed_input_size(self.model_config)
        meta_architecture = getattr(self.model_config, self.model_config.WhichOneof("model"))
        self._resizer = image_resizer_builder.build(meta_architecture.image_resizer)

    def resize(self, image) -> np.ndarray:
        """uint8 ``HxW``, ``HxWx1`` or ``HxWx3`` -> float32 ``hxwx3`` at the model's input size.

        A grayscale image is resized as one channel and then copied to three: each channel
        is resized on its own, so this equals resizing the three copies, for a third of the work.
        """
        import tensorflow as tf

        image = tf.cast(tf.convert_to_tensor(image), tf.float32)
        if image.shape.rank == 2:
            image = image[..., tf.newaxis]
        if self.input_size is not None:
            image = self._resizer(image)[0]
        return np.ascontiguousarray(np.broadcast_to(image.numpy(), (*image.shape[:2], 3)))

    def __call__(self, images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """float32 ``[batch, h, w, 3]`` (0..255) -> per image, normalized ``ymin, xmin, ymax,
        xmax`` boxes ``(n, 4)`` and their scores ``(n,)``, highest score first."""
        outputs = self.raw(images)
        boxes = outputs["detection_boxes"].astype(np.float64)
        scores = outputs["detection_scores"].astype(np.float64)
        counts = outputs["num_detections"].astype(int)
        return ([np.clip(b[:n], 0.0, 1.0) for b, n in zip(boxes, counts, strict=True)],
                [s[:n] for s, n in zip(scores, counts, strict=True)])

    def raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The SavedModel's own output dictionary for ``images``, as numpy arrays."""
        import tensorflow as tf

        outputs = self._detect(**{self._input_name: tf.constant(images, tf.float32)})
        return {name: value.numpy() for name, value in outputs.items()}


def _detection_signature(loaded, folder: Path):
    """The batchable float-image detection signature and its input's name, or BadInput."""
    signature = loaded.signatures.get(SIGNATURE) if hasattr(loaded, "signatures") else None
    if signature is None:
        raise BadInput(f"the SavedModel has no {SIGNATURE!r} signature (not an OD API export)",
                       folder)
    inputs = signature.structured_input_signature[1]
    missing = [name for name in DETECTION_OUTPUTS if name not in signature.structured_outputs]
    if missing:
        raise BadInput(f"not a detection SavedModel: its outputs lack {', '.join(missing)}",
                       folder)
    spec = next(iter(inputs.values()), None) if len(inputs) == 1 else None
    if spec is None or spec.dtype.name != "float32" or spec.shape.rank != 4:
        found = {name: f"{spec.dtype.name}{spec.shape}" for name, spec in inputs.items()}
        raise BadInput(f"the SavedModel's input is {found}, not one float32 [batch, height, "
                       "width, 3] image tensor: export with tfod-export (float_image_tensor)",
                       folder)
    return signature, next(iter(inputs))
