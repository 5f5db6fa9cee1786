"""Opacity probabilities for DICOMs or converted records: ``patientId,probability``.

Inputs (``--input``): a folder of ``<patientId>.dcm``, a text file listing DICOM paths (one a
line, relative to the list's folder; blank lines and ``#`` comments ignored), or a TFRecord
glob of a converted folder. DICOMs go through :func:`tfod.data.dicom.prepare_image` exactly as
the converter reads them, so a DICOM and its record reach the model as the same bytes.

Every input image gets a row, except those that cannot be read or decoded (or repeat a
patientId already seen): these are listed with their reason in the sidecar
``<output>.skipped.json`` (always written, ``[]`` when none) and counted in the summary.
"""
from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfod import runfolder
from tfod.classify import data
from tfod.classify.model import load_saved_model
from tfod.classify.runpaths import is_run_folder, saved_model_path
from tfod.data.dicom import DicomError, prepare_image
from tfod.data.input_files import input_files
from tfod.errors import BadInput
from tfod.runfolder import RunFolder

log = logging.getLogger(__name__)

HEADER = ["patientId", "probability"]
Predictor = Callable[[list[bytes]], tf.Tensor]


def load_predictor(model) -> Predictor:
    """The SavedModel of a classifier run folder, or a SavedModel folder itself."""
    path = Path(model)
    if is_run_folder(path):
        path = saved_model_path(RunFolder(path))
        if not path.is_dir():
            raise BadInput("classifier run folder has no exported SavedModel yet", model)
    if not (path / "saved_model.pb").is_file():
        raise BadInput("neither a classifier run folder nor a SavedModel folder", model)
    return load_saved_model(path)


def skipped_path(output) -> Path:
    """``probs.csv`` -> ``probs.skipped.json``: the inputs that got no probability."""
    output = Path(output)
    return output.with_name(f"{output.stem}.skipped.json")


def _dicom_images(paths: list[Path], skipped: list[dict]) -> Iterator[tuple[str, bytes]]:
    for path in tqdm(paths, desc="classify", unit="image", disable=len(paths) < 100):
        try:
            image = prepare_image(path, "passthrough")
        except DicomError as error:
            skipped.append({"patientId": path.stem, "file": str(path), "reason": error.reason})
            continue
        yield image.patient_id, image.encoded


def input_images(spec, skipped: list[dict]) -> Iterator[tuple[str, bytes]]:
    """``(patientId, encoded image)`` per input of ``spec`` (what ``--input`` names:
    :func:`tfod.data.input_files.input_files`); unreadable DICOMs are appended to ``skipped``."""
    kind, found = input_files(str(spec))
    if kind == "tfrecords":
        return ((patient_id, encoded) for patient_id, encoded, _ in data.read_examples(found))
    return _dicom_images(found, skipped)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _predict_batch(predictor: Predictor, batch: list, skipped: list[dict]) -> dict[str, float]:
    """Probabilities of one batch; an image the model cannot decode is skipped alone."""
    try:
        values = predictor([encoded for _, encoded in batch]).numpy()
        return {patient_id: float(p) for (patient_id, _), p in zip(batch, values, strict=True)}
    except tf.errors.InvalidArgumentError:
        if len(batch) == 1:
            skipped.append({"patientId": batch[0][0], "reason": "image bytes do not decode"})
            return {}
    found = {}
    for item in batch:
        found.update(_predict_batch(predictor, [item], skipped))
    return found


def predict_probabilities(predictor: Predictor, images: Iterable[tuple[str, bytes]],
                          skipped: list[dict], batch_size: int = 16) -> dict[str, float]:
    """``{patientId: probability}``; repeated patientIds are skipped after the first."""
    probabilities: dict[str, float] = {}
    seen: set[str] = set()
    for batch in _batches(images, batch_size):
        fresh = []
        for patient_id, encoded in batch:
            if patient_id in seen:
                skipped.append({"patientId": patient_id, "reason": "patientId repeated"})
            else:
                seen.add(patient_id)
                fresh.append((patient_id, encoded))
        probabilities.update(_predict_batch(predictor, fresh, skipped))
    return probabilities


def write_probabilities(probabilities: dict[str, float], path) -> Path:
    path = Path(path)
    with runfolder.atomic_write(path, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerows((patient_id, f"{p:.9g}") for patient_id, p in probabilities.items())
    return path


def predict(model, input_spec, output, batch_size: int = 16) -> dict:
    """Write ``output`` (``patientId,probability``) and its skipped sidecar; a summary."""
    predictor = load_predictor(model)
    skipped: list[dict] = []
    probabilities = predict_probabilities(predictor, input_images(input_spec, skipped), skipped,
                                          batch_size)
    with runfolder.atomic_write(skipped_path(output)) as sidecar:  # renamed right after output
        sidecar.write(runfolder.json_text(skipped))
        write_probabilities(probabilities, output)
    for entry in skipped:
        log.warning("skipped %s: %s", entry.get("file", entry["patientId"]), entry["reason"])
    values = np.fromiter(probabilities.values(), float, len(probabilities))
    return {"output": str(output), "images": len(probabilities), "skipped": len(skipped),
            "skipped_file": str(skipped_path(output)),
            "mean_probability": float(values.mean()) if len(values) else math.nan}
