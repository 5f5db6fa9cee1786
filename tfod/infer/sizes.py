"""Each image's original width and height, which the ensemble needs to normalize its boxes.

Detections CSVs hold pixels of each original image but not the image's size, and
ensemble-boxes works on boxes normalized to [0, 1]: a 600 x 400 image must be divided by its
own 600 and 400. The sizes come from (first match wins):

* an image sizes CSV ``patientId,width,height`` (``--image_sizes``);
* the DICOMs (``Columns`` x ``Rows``; a folder or a text file of paths) or the TFRecords
  (``image/original_width`` x ``image/original_height`` when the converter wrote them, else the
  record's image size) given as ``--input``;
* none of them: every image is RSNA's 1024 x 1024 (the tool prints a note).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom

from tfod.data.input_files import input_files
from tfod.errors import BadInput

SIZES_COLUMNS = ["patientId", "width", "height"]


def read_image_sizes(path) -> dict[str, tuple[int, int]]:
    """``patientId -> (width, height)`` from a ``patientId,width,height`` CSV."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise BadInput(f"cannot read ({error})", path) from None
    if [c.strip() for c in table.columns] != SIZES_COLUMNS:
        raise BadInput(f"header {list(table.columns)} is not {','.join(SIZES_COLUMNS)}", path)
    sizes = {}
    for row, (patient_id, width, height) in enumerate(table.itertuples(index=False), start=1):
        if not patient_id.strip() or patient_id in sizes:
            raise BadInput(f"patientId {patient_id!r} is empty or listed twice", path, row)
        try:
            size = int(width), int(height)
        except ValueError:
            raise BadInput(f"width {width!r} and height {height!r} must be integers",
                           path, row) from None
        if min(size) < 1:
            raise BadInput(f"size {size} must be positive", path, row)
        sizes[patient_id.strip()] = size
    return sizes


def _dicom_size(path: Path) -> tuple[int, int]:
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.Columns), int(header.Rows)
    except Exception as error:  # noqa: BLE001  (pydicom raises many types)
        raise BadInput(f"cannot read the DICOM's Rows/Columns ({error})", path) from None


def _first(feature, key: str, fallback: str | None = None):
    values = feature[key] if key in feature else feature[fallback]
    return (values.bytes_list.value or values.int64_list.value)[0]


def _record_sizes(files: list[str]) -> dict[str, tuple[int, int]]:
    import tensorflow as tf

    sizes = {}
    for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        patient_id = _first(feature, "image/source_id").decode()
        sizes[patient_id] = (int(_first(feature, "image/original_width", "image/width")),
                             int(_first(feature, "image/original_height", "image/height")))
    return sizes


def sizes_of_inputs(text: str) -> dict[str, tuple[int, int]]:
    """``patientId -> (width, height)`` of the DICOMs or TFRecords ``text`` names."""
    kind, found = input_files(text)
    if kind == "tfrecords":
        return _record_sizes(found)
    return {path.stem: _dicom_size(path) for path in found}
