"""What ``tfod-predict`` reads: a DICOM folder, a text file of DICOM paths, or a TFRecord glob.

Each input image becomes an item whose ``load()`` (run in a worker thread) gives its pixels
and its original size, or a :class:`Skipped` saying why it cannot be read, so an unreadable
input is listed, never dropped: a broken link, the files of a patientId that several files
claim (all of them, as ``tfod-convert`` does), and the rest of a damaged record file from the
damage on (how many images it held is unknown: the :class:`Skipped` says so).

Pixels are the converter's, bit for bit: a DICOM the converter passes through (8-bit
MONOCHROME2 JPEG Baseline) has its JPEG frame decoded by TensorFlow's JPEG decoder, the one the
OD API applies to the records; any other DICOM goes through :func:`tfod.data.dicom.decode_8bit`
(MONOCHROME1 inversion, windowing), whose pixels the converter stores losslessly as PNG. So a
DICOM folder and its converted TFRecords give the same detections.

The original size is the DICOM's ``Columns`` x ``Rows``; in a record it is
``image/original_width`` x ``image/original_height`` (written by the converter), or the
record's image size in records written before those keys existed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tfod.data import dicom
from tfod.data.input_files import by_patient, duplicate_reason, input_files


@dataclass(frozen=True)
class Skipped:
    """An input that gave no image, and why; ``images``: how many images it held (None: not
    known, the rest of a damaged record file)."""

    input: str
    reason: str
    patient_id: str = ""
    images: int | None = 1


@dataclass(frozen=True)
class LoadedImage:
    """Pixels of one input (uint8 ``HxW``, ``HxWx1`` or ``HxWx3``) and its original width and
    height."""

    patient_id: str
    origin: str
    image: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class DicomInput:
    path: Path

    @property
    def patient_id(self) -> str:
        return self.path.stem

    def load(self) -> LoadedImage:
        data = dicom.read_bytes(self.path)
        dataset = dicom.read_dataset(self.path, data)
        header = dicom.read_header(dataset, self.path)
        if dicom.can_pass_through(dataset):
            image = decode_encoded(dicom.jpeg_frame(dataset, self.path))
        else:
            image = dicom.decode_8bit(dataset, self.path)
        return LoadedImage(self.patient_id, str(self.path), image, header.columns, header.rows)


@dataclass(frozen=True)
class RecordInput:
    patient_id: str
    origin: str  # <file>#<index>
    encoded: bytes
    width: int  # of the original image
    height: int

    def load(self) -> LoadedImage:
        image = decode_encoded(self.encoded)
        width, height = (self.width, self.height) if self.width > 0 else image.shape[1::-1]
        return LoadedImage(self.patient_id, self.origin, image, int(width), int(height))


def decode_encoded(encoded: bytes) -> np.ndarray:
    """JPEG or PNG bytes -> uint8 ``HxWxC`` with the OD API's decoder, in the file's own
    channels: a grayscale image stays one channel until after the resize (three times less to
    resize; the OD API's three channels of a grayscale image are copies of one)."""
    import tensorflow as tf

    return tf.io.decode_image(encoded, channels=0, expand_animations=False).numpy()


def load(item: DicomInput | RecordInput) -> LoadedImage | Skipped:
    """``item.load()``, or the reason it failed."""
    import tensorflow as tf

    try:
        return item.load()
    except dicom.DicomError as error:
        return Skipped(error.path, error.reason, item.patient_id)
    except tf.errors.OpError as error:
        return Skipped(getattr(item, "origin", str(item)), f"cannot decode the image "
                       f"({error.message.splitlines()[0]})", item.patient_id)


class Inputs(NamedTuple):
    """The items to predict (lazily, in order), how many when known, and what kind."""

    items: Iterator[DicomInput | RecordInput | Skipped]
    total: int | None
    kind: str  # 'dicom folder', 'dicom list' or 'tfrecords'


def find_inputs(text: str) -> Inputs:
    """A DICOM folder, a text file of DICOM paths, or a TFRecord glob -> :class:`Inputs`."""
    kind, found = input_files(text)
    if kind == "tfrecords":
        return Inputs(_records(found), None, kind)
    _, duplicates = by_patient(found)
    items = [Skipped(str(path), duplicate_reason(duplicates[path.stem], "read"), path.stem)
             if path.stem in duplicates else DicomInput(path) for path in found]
    return Inputs(iter(items), len(items), kind)


def _records(files: list[str]) -> Iterator[RecordInput | Skipped]:
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([], dtype, default_value=default) for name, dtype, default
            in (("image/encoded", tf.string, b""), ("image/source_id", tf.string, b""),
                ("image/height", tf.int64, -1), ("image/width", tf.int64, -1),
                ("image/original_height", tf.int64, -1), ("image/original_width", tf.int64, -1))}
    for file in files:
        index = 0
        try:
            for record in tf.data.TFRecordDataset(file):
                origin = f"{file}#{index}"
                index += 1
                yield _record_input(tf.io.parse_single_example(record, spec), origin)
        except tf.errors.OpError as error:
            where = ("not a TFRecord file, or damaged from its first record" if index == 0 else
                     f"damaged at record {index}: it and the rest of the file are lost")
            yield Skipped(f"{file}#{index}", f"{where}, how many images is unknown "
                          f"({error.message.splitlines()[0]})", images=None)


def _record_input(example: dict, origin: str) -> RecordInput | Skipped:
    values = {name: value.numpy() for name, value in example.items()}
    patient_id = values["image/source_id"].decode()
    if not patient_id or not values["image/encoded"]:
        return Skipped(origin, "not an OD API image record (no image/source_id or image/encoded)")
    width, height = values["image/original_width"], values["image/original_height"]
    if width <= 0 or height <= 0:
        width, height = values["image/width"], values["image/height"]
    return RecordInput(patient_id, origin, values["image/encoded"], int(width), int(height))
