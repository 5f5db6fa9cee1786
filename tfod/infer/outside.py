"""Readers for detections made outside tfod, so such models join the ensemble.

Both return a :class:`~tfod.detections.BoxTable` of pixel ``x, y, w, h`` boxes of each original
image, the frame of tfod's detections CSV; every conversion goes through :mod:`tfod.boxes`.

* Darknet YOLOv3 ``./darknet detector valid`` result files: one file per class (RSNA has one,
  opacity), one line per box ``image_id score x1 y1 x2 y2`` in pixels. Darknet writes VOC-style
  1-based corners (it adds 1 to both), so 1 is taken off. An image without boxes has no line:
  the reader returns only the images with boxes, and the ensemble fills in the others.
* Any CSV, through a column mapping ``{our name: their column}``. Our names are
  ``patientId``, ``score`` and the box's: ``x, y, width, height`` (``xywh``), ``x1, y1, x2,
  y2`` (``xyxy``) or ``cx, cy, width, height`` (``cxcywh``); a name not mapped is looked up as
  itself. ``normalized`` boxes are in [0, 1] and need each image's size. A row whose box
  fields are all empty is an image without boxes.

A bad row raises :class:`~tfod.errors.BadInput` naming the file and its line as an editor shows
it (a CSV's header is line 1).

The image-level classifier's ``patientId,probability`` CSV (for gating) is read here too.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tfod import boxes as box_ops
from tfod.detections import BoxTable, read_table
from tfod.errors import BadInput
from tfod.fields import parse_number

BOX_FORMATS = {
    "xywh": ("x", "y", "width", "height"),
    "xyxy": ("x1", "y1", "x2", "y2"),
    "cxcywh": ("cx", "cy", "width", "height"),
}
DARKNET_OFFSET = 1.0  # Darknet's VOC writer adds 1 to every corner


def _score(text: str, path, row: int) -> float:
    score = parse_number(path, row, "score", text)
    if not 0.0 <= score <= 1.0:
        raise BadInput(f"score {score} is outside [0, 1]", path, row)
    return score


def _to_xywh(boxes: np.ndarray, box_format: str) -> np.ndarray:
    if box_format == "xyxy":
        return box_ops.from_corners(boxes)
    if box_format == "cxcywh":
        return box_ops.from_centres(boxes)
    return boxes


def _table(ids: list[str], image: list[int], boxes: np.ndarray, scores: list, lines: list[int],
           path) -> BoxTable:
    """The boxes (pixel ``x, y, w, h``, read from ``lines`` of ``path``) as a table; a box
    without area (e.g. ``x1 > x2``) is an error naming its line."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bad = np.flatnonzero((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))
    if len(bad):
        raise BadInput(f"box of {ids[image[bad[0]]]} has no area (width x height "
                       f"{boxes[bad[0], 2]:g} x {boxes[bad[0], 3]:g})", path, lines[bad[0]])
    return BoxTable(ids, image, boxes, scores)


def read_darknet(path) -> BoxTable:
    """One Darknet ``detector valid`` result file (see the module docstring)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read a Darknet result file ({error})", path) from None
    if not any(line.strip() for line in lines):
        raise BadInput("empty Darknet result file: no box line (a model that found nothing "
                       "cannot be told from a file that was not written)", path)
    index: dict[str, int] = {}
    image, boxes, scores, numbers = [], [], [], []
    for row, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise BadInput(f"{len(fields)} fields, expected 6: image_id score x1 y1 x2 y2",
                           path, row)
        patient_id = fields[0]
        corners = [parse_number(path, row, n, t) - DARKNET_OFFSET
                   for t, n in zip(fields[2:], ("x1", "y1", "x2", "y2"), strict=True)]
        image.append(index.setdefault(patient_id, len(index)))
        boxes.append(corners)
        scores.append(_score(fields[1], path, row))
        numbers.append(row)
    return _table(list(index), image, box_ops.from_corners(np.reshape(boxes, (-1, 4))),
                  scores, numbers, path)


def parse_columns(text: str) -> dict[str, str]:
    """``patientId=id,x=left,...`` -> ``{"patientId": "id", "x": "left", ...}``."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        ours, sep, theirs = part.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise BadInput(f"--columns entry {part!r} is not name=column")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _check_mapping(columns: Mapping[str, str], box_format: str, header, path) -> list[str]:
    if box_format not in BOX_FORMATS:
        raise BadInput(f"--box_format {box_format!r} is not one of {', '.join(BOX_FORMATS)}")
    ours = ["patientId", "score", *BOX_FORMATS[box_format]]
    unknown = set(columns) - set(ours)
    if unknown:
        raise BadInput(f"--columns names {sorted(unknown)} are not among {ours} "
                       f"(--box_format={box_format})")
    theirs = [columns.get(name, name) for name in ours]
    absent = [c for c in theirs if c not in header]
    if absent:
        raise BadInput(f"no column {absent} (columns: {list(header)})", path)
    return theirs


def read_mapped_csv(path, columns: Mapping[str, str] | None = None, box_format: str = "xywh",
                    normalized: bool = False,
                    sizes: Mapping[str, tuple[int, int]] | None = None) -> BoxTable:
    """Detections from any CSV through a column mapping (see the module docstring)."""
    path = Path(path)
    frame = read_table(path)
    theirs = _check_mapping(columns or {}, box_format, frame.columns, path)
    index: dict[str, int] = {}
    image, boxes, scores, numbers = [], [], [], []
    for row, fields in zip(frame.index, frame[theirs].itertuples(index=False), strict=True):
        patient_id, score, *box = (field.strip() for field in fields)
        if not patient_id:
            raise BadInput("empty patientId", path, row)
        i = index.setdefault(patient_id, len(index))
        if not any([score, *box]):
            continue
        names = BOX_FORMATS[box_format]
        boxes.append([parse_number(path, row, n, t) for t, n in zip(box, names, strict=True)])
        scores.append(_score(score, path, row))
        image.append(i)
        numbers.append(row)
    ids = list(index)
    array = np.reshape(np.array(boxes, dtype=np.float64), (-1, 4))
    if normalized:
        width, height = _sizes_of_boxes(ids, image, sizes, path)
        array = box_ops.to_pixels(array, width, height)
    return _table(ids, image, _to_xywh(array, box_format), scores, numbers, path)


def _sizes_of_boxes(ids, image, sizes, path):
    from tfod.infer.ensemble import size_arrays

    width, height = size_arrays(ids, sizes)
    image = np.asarray(image, dtype=np.int64)
    if sizes is None:
        print(f"note: {path}: normalized boxes scaled to 1024 x 1024 (no image sizes given)")
    return width[image], height[image]


def read_probabilities(path) -> dict[str, float]:
    """An image classifier's ``patientId,probability`` CSV, each probability in [0, 1]."""
    path = Path(path)
    frame = read_table(path)
    if list(frame.columns) != ["patientId", "probability"]:
        raise BadInput(f"header {list(frame.columns)} is not patientId,probability", path, 1)
    probabilities = {}
    for row, (patient_id, text) in zip(frame.index, frame.itertuples(index=False), strict=True):
        patient_id = patient_id.strip()
        if not patient_id or patient_id in probabilities:
            raise BadInput(f"patientId {patient_id!r} is empty or listed twice", path, row)
        value = parse_number(path, row, "probability", text)
        if not 0.0 <= value <= 1.0:
            raise BadInput(f"probability {value} is outside [0, 1]", path, row)
        probabilities[patient_id] = value
    return probabilities
