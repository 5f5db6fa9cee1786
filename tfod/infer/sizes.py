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

from tfod.data import dicom
from tfod.data.input_files import input_files
from tfod.detections import read_table
from tfod.errors import BadInput
from tfod.infer.inputs import Skipped

SIZES_COLUMNS = ["patientId", "width", "height"]


def read_image_sizes(path) -> dict[str, tuple[int, int]]:
    """``patientId -> (width, height)`` from a ``patientId,width,height`` CSV."""
    table = read_table(path)
    if list(table.columns) != SIZES_COLUMNS:
        raise BadInput(f"header {list(table.columns)} is not {','.join(SIZES_COLUMNS)}", path, 1)
    sizes = {}
    for line, (patient_id, width, height) in zip(table.index, table.itertuples(index=False),
                                                 strict=True):
        patient_id = patient_id.strip()
        if not patient_id or patient_id in sizes:
            raise BadInput(f"patientId {patient_id!r} is empty or listed twice", path, line)
        try:
            size = int(width), int(height)
        except ValueError:
            raise BadInput(f"width {width!r} and height {height!r} must be integers",
                           path, line) from None
        if min(size) < 1:
            raise BadInput(f"size {size} must be positive", path, line)
        sizes[patient_id] = size
    return sizes


def dicom_sizes(paths) -> tuple[dict[str, tuple[int, int]], list[Skipped]]:
    """``patientId -> (width, height)`` of the DICOMs ``paths``, read as predict reads them
    (:class:`tfod.infer.inputs.DicomInput`): one that cannot be read is in the skipped list
    with its reason, as predict skips it, and does not stop the others."""
    sizes, skipped = {}, []
    for path in paths:
        try:
            dataset = dicom.read_dataset(path, dicom.read_bytes(path))
            header = dicom.read_header(dataset, path)
        except dicom.DicomError as error:
            skipped.append(Skipped(error.path, error.reason, Path(path).stem))
            continue
        sizes[Path(path).stem] = (header.columns, header.rows)
    return sizes, skipped


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


def sizes_of_inputs(text: str) -> tuple[dict[str, tuple[int, int]], list[Skipped]]:
    """``patientId -> (width, height)`` of the DICOMs or TFRecords ``text`` names, and the
    inputs skipped as unreadable (see :func:`dicom_sizes`)."""
    kind, found = input_files(text)
    if kind == "tfrecords":
        return _record_sizes(found), []
    return dicom_sizes(found)
