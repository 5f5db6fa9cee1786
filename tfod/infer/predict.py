"""Batched prediction of an exported detector over DICOMs or TFRecords, with optional flip TTA.

:func:`predict` is the library call (``tfod-predict`` and the ensemble stage use it):

* inputs come from :func:`tfod.infer.inputs.find_inputs`; worker threads decode and resize
  each image (:meth:`ExportedModel.resize`, the model's own resizer) a few batches ahead of the
  model, so decoding overlaps inference (TensorFlow's decode and resize ops release the GIL);
* images are stacked ``batch_size`` at a time (same-shape groups, for models without one input
  size) and the model runs once per batch;
* ``tta="hflip"`` also runs each batch flipped left-right, flips those boxes back
  (:func:`tfod.boxes.hflip_yxyx`) and fuses them with the originals by weighted box fusion
  (``ensemble_boxes.weighted_boxes_fusion``): a box found in both views keeps its averaged
  place and score, a box found in one view keeps its place at half its score;
* normalized boxes become pixel ``x, y, w, h`` of each image's own original size
  (:func:`tfod.boxes.yxyx_to_xywh`), so a 600x400 image gets boxes in its 600x400 frame.

Every input is in the result: an image without a box above ``min_score`` maps to an empty
:class:`~tfod.detections.ImageBoxes` (one row with empty fields in the CSV), and an input that
cannot be read, or repeats a patientId, is in the ``skipped`` list with its reason.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.detections import ImageBoxes
from tfod.errors import BadInput
from tfod.infer.formats import load_model, model_folder
from tfod.infer.inputs import LoadedImage, Skipped, find_inputs, load
from tfod.infer.model import ExportedModel
from tfod.runfolder import ExportFolder, atomic_write, json_text, read_json

TTA_MODES = ("none", "hflip")
TTA_IOU = 0.55  # weighted box fusion: boxes overlapping more than this are one object
BATCHES_AHEAD = 2


def predict(model, inputs, batch_size: int = 8, min_score: float = 0.0, tta: str = "none",
            progress: bool = True, workers: int | None = None
            ) -> tuple[dict[str, ImageBoxes], list[Skipped]]:
    """Detections of ``model`` (an :class:`ExportedModel`, or a path for
    :func:`tfod.infer.formats.load_model`: an export or run folder, a ``.onnx`` or ``.tflite``
    file) on ``inputs`` (a DICOM folder, a text file of DICOM paths, or a TFRecord glob):
    ``(detections, skipped)``.

    ``detections`` maps each readable image's patientId (in input order) to its boxes in
    pixels of its original size with scores >= ``min_score``; ``skipped`` lists the rest.
    :class:`BadInput` when no image at all could be read (nothing to predict).
    """
    _check_options(batch_size, min_score, tta)
    found = find_inputs(str(inputs))
    model = model if callable(model) else load_model(model)
    detections: dict[str, ImageBoxes] = {}
    skipped: list[Skipped] = []
    loaded = _prefetch(lambda item: _load_resized(model, item), found.items,
                       workers or min(4, os.cpu_count() or 1), BATCHES_AHEAD * batch_size)
    with _progress(found.total, progress) as bar:
        for batch in _batches(_unique(loaded, skipped, bar), batch_size):
            for image, result in zip(batch, _detect(model, batch, tta), strict=True):
                detections[image.patient_id] = _to_pixels(*result, image, min_score)
            bar.update(len(batch))
    if not detections:
        example = f", e.g. {skipped[0].input}: {skipped[0].reason}" if skipped else ""
        raise BadInput(f"no image to predict ({_lost(skipped)}{example})", inputs)
    return detections, skipped


def _check_options(batch_size: int, min_score: float, tta: str) -> None:
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 <= min_score <= 1.0:
        raise BadInput(f"minimum score must be in [0, 1], got {min_score}")
    if tta not in TTA_MODES:
        raise BadInput(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def _load_resized(model, item) -> LoadedImage | Skipped:
    if isinstance(item, Skipped):
        return item
    image = load(item)
    if isinstance(image, Skipped):
        return image
    return LoadedImage(image.patient_id, image.origin, model.resize(image.image),
                       image.width, image.height)


def _prefetch(function: Callable, items: Iterable, workers: int, ahead: int) -> Iterator:
    """``map(function, items)`` in order, run by ``workers`` threads at most ``ahead`` items
    ahead of the consumer (bounded memory, unlike ``Executor.map``)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfod-predict") as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _unique(images: Iterable[LoadedImage | Skipped], skipped: list[Skipped], bar
            ) -> Iterator[LoadedImage]:
    """The loaded images, each patientId once; the rest appended to ``skipped``."""
    seen: dict[str, str] = {}
    for image in images:
        if not isinstance(image, Skipped) and image.patient_id in seen:
            image = Skipped(image.origin, f"patientId {image.patient_id} already read from "
                            f"{seen[image.patient_id]}", image.patient_id)
        if isinstance(image, Skipped):
            skipped.append(image)
            bar.update(1)
            continue
        seen[image.patient_id] = image.origin
        yield image


def _batches(images: Iterable[LoadedImage], size: int) -> Iterator[list[LoadedImage]]:
    """Runs of up to ``size`` images of one shape (all of them, at a fixed input size)."""
    batch: list[LoadedImage] = []
    for image in images:
        if batch and (len(batch) == size or image.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def _detect(model, batch: list[LoadedImage], tta: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalized ``ymin, xmin, ymax, xmax`` boxes and scores per image of ``batch``."""
    stacked = np.stack([image.image for image in batch])
    boxes, scores = model(stacked)
    if tta == "none":
        return list(zip(boxes, scores, strict=True))
    flipped_boxes, flipped_scores = model(np.ascontiguousarray(stacked[:, :, ::-1]))
    return [fuse_flipped(*views) for views in
            zip(boxes, scores, flipped_boxes, flipped_scores, strict=True)]


def fuse_flipped(boxes, scores, flipped_boxes, flipped_scores) -> tuple[np.ndarray, np.ndarray]:
    """Weighted box fusion of an image's boxes with those of its left-right flip (normalized
    ``ymin, xmin, ymax, xmax`` in each view's frame) -> fused boxes and scores, best first."""
    from ensemble_boxes import weighted_boxes_fusion

    views = [box_ops.yxyx_to_xyxy(boxes),
             box_ops.yxyx_to_xyxy(box_ops.hflip_yxyx(flipped_boxes))]
    view_scores = [np.asarray(scores, np.float64), np.asarray(flipped_scores, np.float64)]
    fused, fused_scores, _ = weighted_boxes_fusion(
        views, view_scores, [np.zeros(len(s)) for s in view_scores], iou_thr=TTA_IOU,
        skip_box_thr=0.0)
    return box_ops.xyxy_to_yxyx(fused), np.asarray(fused_scores, np.float64)


def _to_pixels(boxes, scores, image: LoadedImage, min_score: float) -> ImageBoxes:
    keep = np.asarray(scores) >= min_score
    return ImageBoxes(box_ops.yxyx_to_xywh(np.asarray(boxes)[keep], image.width, image.height),
                      np.asarray(scores)[keep])


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="predict", disable=not enabled, smoothing=0.1)


def export_threshold(model) -> float | None:
    """The evaluator's best ``rsna/threshold`` of the exported checkpoint (``export.json``)."""
    folder = model.folder if isinstance(model, ExportedModel) else model_folder(model)
    return (read_json(ExportFolder(folder).export_json, default={}) or {}).get("rsna/threshold")


def skipped_path(output) -> Path:
    """The sidecar JSON that lists the skipped inputs of the detections CSV ``output``."""
    output = Path(output)
    return output.with_name(output.name + ".skipped.json")


def write_predictions(detections: dict[str, ImageBoxes], skipped: list[Skipped], output,
                      submission=None, threshold: float = 0.0) -> list[Path]:
    """Write the detections CSV, its ``.skipped.json`` sidecar (always, empty when nothing was
    skipped) and, with ``submission``, the Kaggle CSV of the boxes scoring >= ``threshold``.

    Each file is written atomically; the sidecar is written first and renamed into place right
    after the CSV, so a failed write keeps the earlier CSV with its own sidecar."""
    with atomic_write(skipped_path(output)) as sidecar:
        sidecar.write(json_text([asdict(item) for item in skipped]))
        written = [det.write_detections(detections, output), skipped_path(output)]
    if submission is not None:
        above = {patient_id: ImageBoxes(image.boxes[image.scores >= threshold],
                                        image.scores[image.scores >= threshold])
                 for patient_id, image in detections.items()}
        written.append(det.write_submission(above, submission))
    return written


def _lost(skipped: list[Skipped]) -> str:
    damaged = sum(item.images is None for item in skipped)
    return f"skipped {sum(item.images or 0 for item in skipped)} image(s)" + (
        f" and the rest of {damaged} damaged record file(s) (how many images is unknown)"
        if damaged else "")


def format_skipped(skipped: list[Skipped], limit: int = 10) -> str:
    """The printed ``skipped`` summary: how many images were lost (and the damaged record files
    whose lost images cannot be counted), then the first few inputs with reasons."""
    lines = [_lost(skipped)]
    lines += [f"  {item.input}: {item.reason}" for item in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see the .skipped.json file)")
    return "\n".join(lines)
