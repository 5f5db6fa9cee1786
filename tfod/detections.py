"""Boxes per image in memory, and the three CSV files that hold them on disk.

In memory, a set of detections (or of ground-truth boxes) is a plain ``dict`` that maps each
``patientId`` to an :class:`ImageBoxes`: pixel ``x, y, width, height`` boxes (see
:mod:`tfod.boxes`) and one score per box. An image with no box maps to an empty
:class:`ImageBoxes`, so "looked at, found nothing" differs from "never looked at".

On disk (the official files' own shapes):

* detections CSV: ``patientId,x,y,width,height,score``, one row per box; an image with no box
  is one row with the five other fields empty.
* labels CSV (the official ``stage_2_train_labels.csv``): ``patientId,x,y,width,height,Target``,
  ``Target`` 1 with a box, 0 with empty box fields.
* submission CSV (Kaggle): ``patientId,PredictionString``, the string being space-separated
  ``score x y width height`` groups, empty for an image without boxes; one row per image.

Every reader validates each row; a bad row raises :class:`FormatError` naming the file and
the row (the header is row 1, as in a spreadsheet). Every writer writes atomically
(:func:`tfod.runfolder.atomic_write`): a file appears whole or not at all.
"""
from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfod.errors import FormatError
from tfod.fields import parse_number
from tfod.labelrows import read_label_rows
from tfod.runfolder import atomic_write

DETECTIONS_HEADER = ["patientId", "x", "y", "width", "height", "score"]
SUBMISSION_HEADER = ["patientId", "PredictionString"]


@dataclass(frozen=True, eq=False)
class ImageBoxes:
    """The boxes of one image: ``boxes`` (N, 4) pixel ``x, y, w, h``, ``scores`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> ImageBoxes:
        return cls(np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def ground_truth(cls, boxes) -> ImageBoxes:
        """Ground-truth boxes: every score is 1."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return cls(boxes, np.ones(len(boxes)))


class BoxTable(Mapping[str, ImageBoxes]):
    """The boxes of many images in flat arrays; a read-only mapping ``patientId -> ImageBoxes``.

    ``ids`` (I,) lists every image once, those without boxes included; box ``n`` belongs to
    image ``ids[image[n]]`` and has ``boxes[n]`` (pixel ``x, y, w, h``) and ``scores[n]``.
    Boxes are kept grouped by image, each image's in its input order. The metric works on
    these arrays directly; any other mapping is converted by :meth:`of`.
    """

    def __init__(self, ids: Sequence[str], image, boxes, scores):
        self.ids = list(ids)
        image = np.asarray(image, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if not len(image) == len(boxes) == len(scores):
            raise ValueError(
                f"{len(image)} image indices, {len(boxes)} boxes, {len(scores)} scores")
        if len(image) and (image.min() < 0 or image.max() >= len(self.ids)):
            raise ValueError("image index out of range")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique")
        order = np.argsort(image, kind="stable")
        self.image, self.boxes, self.scores = image[order], boxes[order], scores[order]
        self.offsets = np.searchsorted(self.image, np.arange(len(self.ids) + 1))

    @classmethod
    def of(cls, mapping: Mapping[str, ImageBoxes]) -> BoxTable:
        """``mapping`` as a table (itself when it is one)."""
        if isinstance(mapping, BoxTable):
            return mapping
        images = list(mapping.values())
        counts = np.array([len(image.scores) for image in images], dtype=np.int64)
        if not counts.sum():
            return cls(mapping, [], np.zeros((0, 4)), [])
        return cls(mapping, np.repeat(np.arange(len(images)), counts),
                   np.concatenate([image.boxes for image in images]),
                   np.concatenate([image.scores for image in images]))

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {patient_id: i for i, patient_id in enumerate(self.ids)}

    def __getitem__(self, patient_id: str) -> ImageBoxes:
        i = self._index[patient_id]
        start, stop = self.offsets[i], self.offsets[i + 1]
        return ImageBoxes(self.boxes[start:stop], self.scores[start:stop])

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, patient_id) -> bool:
        return patient_id in self._index

    def counts(self) -> np.ndarray:
        """(I,) the number of boxes of each image."""
        return np.diff(self.offsets)

    def box_indices(self, images: np.ndarray) -> np.ndarray:
        """The indices of the boxes of ``images`` (indices into ``ids``), image after image."""
        starts, counts = self.offsets[images], self.counts()[images]
        shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
        return np.arange(len(shift)) + shift

    def max_scores(self, min_score: float = -np.inf) -> np.ndarray:
        """(I,) each image's highest score; ``-inf`` where no box has ``score >= min_score``."""
        scores = np.where(self.scores >= min_score, self.scores, -np.inf)
        highest = np.full(len(self.ids), -np.inf)
        with_boxes = np.flatnonzero(np.diff(self.offsets))
        if len(with_boxes):
            highest[with_boxes] = np.maximum.reduceat(scores, self.offsets[with_boxes])
        return highest

    def subset(self, ids: Sequence[str]) -> BoxTable:
        """The images ``ids`` (each must be in the table), in that order."""
        rows = np.array([self._index[patient_id] for patient_id in ids], dtype=np.int64)
        new_index = np.full(len(self.ids), -1)
        new_index[rows] = np.arange(len(rows))
        keep = new_index[self.image] >= 0
        return BoxTable(ids, new_index[self.image[keep]], self.boxes[keep], self.scores[keep])

    def above(self, min_score: float) -> BoxTable:
        """The boxes with ``score >= min_score`` (every image stays, maybe without boxes)."""
        keep = self.scores >= min_score
        return BoxTable(self.ids, self.image[keep], self.boxes[keep], self.scores[keep])


def count_boxes(detections: Mapping[str, ImageBoxes]) -> int:
    return int(BoxTable.of(detections).counts().sum())


# --- reading -------------------------------------------------------------------------------


def _rows(path: Path, header: list[str]) -> Iterable[tuple[int, list[str]]]:
    """Yield ``(row number, fields)`` of a CSV after checking its header and field counts."""
    number = 1
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is None:
                raise FormatError(path, 1, f"empty file, expected the header {','.join(header)}")
            if [name.strip().lstrip("\ufeff") for name in first] != header:
                raise FormatError(path, 1, f"header {first} is not {','.join(header)}")
            for number, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise FormatError(
                        path, number, f"{len(fields)} fields, expected {len(header)}: {fields}"
                    )
                yield number, [field.strip() for field in fields]
    except (UnicodeDecodeError, csv.Error) as error:
        raise FormatError(path, None, f"not a text CSV file ({error})") from None


def read_table(path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV with a header, every field a string ('' when empty), indexed by each row's line
    number in the file (the header is line 1, as an editor shows it); blank rows are dropped
    and header names stripped. ``columns`` must all be in the header.

    The one reader of the small CSVs the stages take (image sizes, test ids, classifier
    probabilities, class info, outside models' detections), so every error names the file
    and the line.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False,
                            encoding="utf-8")
    except UnicodeDecodeError:
        raise FormatError(path, None, "not a text CSV file") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise FormatError(path, None, f"cannot read as a CSV ({error})") from None
    table.columns = [str(name).strip().lstrip("\ufeff") for name in table.columns]
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise FormatError(path, 1, f"no column {missing} in the header {list(table.columns)}")
    table.index = table.index + 2
    filled = table.apply(lambda column: column.str.strip() != "").any(axis=1)
    return table[filled]


def read_patient_ids(path, repeats: bool = False) -> list[str]:
    """The patientIds that ``path`` lists, in file order, spaces around each stripped: the
    ``patientId`` column of a CSV (Kaggle's sample submission, a labels CSV), or one id per
    line without a header. An empty id is refused; so is an id listed again, naming both
    lines, unless ``repeats`` (a labels CSV lists an image once per box): then it counts once.

    The one reader of id lists (``tfod-ensemble --test_ids``, ``tfod-evaluate --images``).
    """
    table = read_table(path)
    if "patientId" not in table.columns:
        if len(table.columns) != 1:
            raise FormatError(path, 1, "neither one patientId per line nor a CSV with a "
                                       "patientId column")
        first = pd.DataFrame({"patientId": [table.columns[0]]}, index=[1])
        table = pd.concat([first, table.set_axis(["patientId"], axis=1)])
    ids = table["patientId"].str.strip().str.lstrip("\ufeff")
    if (ids == "").any():
        raise FormatError(path, int(ids.index[(ids == "").argmax()]), "empty patientId")
    if not len(ids):
        raise FormatError(path, None, "lists no image")
    repeated = ids[ids.duplicated()]
    if len(repeated) and not repeats:
        first_line = int(ids.index[(ids == repeated.iloc[0]).argmax()])
        raise FormatError(path, int(repeated.index[0]), f"patientId {repeated.iloc[0]} listed "
                                                        f"twice (first on line {first_line})")
    return list(dict.fromkeys(ids))


def _box(path, row: int, fields: list[str]) -> list[float]:
    names = ("x", "y", "width", "height")
    x, y, width, height = (
        parse_number(path, row, name, text) for name, text in zip(names, fields, strict=True)
    )
    if width < 0 or height < 0:
        raise FormatError(path, row, f"negative box size {width} x {height}")
    return [x, y, width, height]


def _score(path, row: int, text: str) -> float:
    score = parse_number(path, row, "score", text)
    if not 0.0 <= score <= 1.0:
        raise FormatError(path, row, f"score {score} is outside [0, 1]")
    return score


def _patient_id(path, row: int, text: str) -> str:
    if not text:
        raise FormatError(path, row, "empty patientId")
    return text


class _Collector:
    """Gathers rows into a :class:`BoxTable`; an image both empty and with boxes is an error."""

    def __init__(self, path):
        self.path = path
        self.index: dict[str, int] = {}
        self.image: list[int] = []
        self.boxes: list[list[float]] = []
        self.scores: list[float] = []
        self.empty_row: dict[str, int] = {}
        self.box_row: dict[str, int] = {}

    def _image(self, patient_id: str) -> int:
        return self.index.setdefault(patient_id, len(self.index))

    def add_empty(self, row: int, patient_id: str):
        if patient_id in self.box_row:
            raise FormatError(self.path, row, f"{patient_id} has boxes (row "
                              f"{self.box_row[patient_id]}) and an empty row")
        self.empty_row.setdefault(patient_id, row)
        self._image(patient_id)

    def add_box(self, row: int, patient_id: str, box: list[float], score: float):
        if patient_id in self.empty_row:
            raise FormatError(self.path, row, f"{patient_id} has an empty row (row "
                              f"{self.empty_row[patient_id]}) and boxes")
        self.box_row.setdefault(patient_id, row)
        self.image.append(self._image(patient_id))
        self.boxes.append(box)
        self.scores.append(score)

    def result(self) -> BoxTable:
        return BoxTable(self.index, self.image, np.array(self.boxes).reshape(-1, 4), self.scores)


def read_detections(path) -> BoxTable:
    """Read a detections CSV (``patientId,x,y,width,height,score``)."""
    path = Path(path)
    collector = _Collector(path)
    for row, fields in _rows(path, DETECTIONS_HEADER):
        patient_id = _patient_id(path, row, fields[0])
        values = fields[1:]
        if not any(values):
            collector.add_empty(row, patient_id)
        elif all(values):
            box, score = _box(path, row, values[:4]), _score(path, row, values[4])
            collector.add_box(row, patient_id, box, score)
        else:
            raise FormatError(path, row, f"some box fields are empty: {fields}")
    return collector.result()


def read_labels(path) -> BoxTable:
    """Read the official labels CSV as ground truth (every score 1): its rows by the one
    parser of label rows (:func:`tfod.labelrows.read_label_rows`, strict: the first bad row is
    a :class:`FormatError`), the same rules ``tfod-convert`` applies."""
    path = Path(path)
    collector = _Collector(path)
    rows, _ = read_label_rows(path, strict=True)
    for row in rows:
        if row.box is None:
            collector.add_empty(row.line, row.patient_id)
        else:
            collector.add_box(row.line, row.patient_id, list(row.box), 1.0)
    return collector.result()


def read_submission(path) -> BoxTable:
    """Read a Kaggle submission CSV (``patientId,PredictionString``)."""
    path = Path(path)
    collector = _Collector(path)
    for row, (patient_id, prediction) in _rows(path, SUBMISSION_HEADER):
        patient_id = _patient_id(path, row, patient_id)
        if patient_id in collector.index:
            first = collector.empty_row.get(patient_id, collector.box_row.get(patient_id))
            raise FormatError(path, row, f"{patient_id} already listed in row {first}")
        tokens = prediction.split()
        if len(tokens) % 5:
            raise FormatError(path, row, f"PredictionString has {len(tokens)} values, not "
                              "groups of 5 (score x y width height)")
        if not tokens:
            collector.add_empty(row, patient_id)
        for i in range(0, len(tokens), 5):
            score = _score(path, row, tokens[i])
            collector.add_box(row, patient_id, _box(path, row, tokens[i + 1:i + 5]), score)
    return collector.result()


# --- writing -------------------------------------------------------------------------------


def _text(value: float) -> str:
    """The shortest text that reads back as exactly ``value``."""
    return repr(float(value))


def write_detections(detections: Mapping[str, ImageBoxes], path) -> Path:
    """Write a detections CSV; an image without boxes becomes one row with empty fields."""
    path = Path(path)
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DETECTIONS_HEADER)
        for patient_id, image in detections.items():
            if not len(image):
                writer.writerow([patient_id, "", "", "", "", ""])
            for box, score in zip(image.boxes, image.scores, strict=True):
                writer.writerow([patient_id, *map(_text, box), _text(score)])
    return path


def prediction_string(image: ImageBoxes) -> str:
    """Kaggle's ``score x y width height ...``, highest score first."""
    order = np.argsort(-image.scores, kind="stable")
    return " ".join(
        " ".join(map(_text, (image.scores[k], *image.boxes[k]))) for k in order
    )


def write_submission(detections: Mapping[str, ImageBoxes], path, ids: Iterable[str] | None = None,
                     check: Callable[[Path], None] | None = None) -> Path:
    """Write a Kaggle submission CSV with one row per image.

    With ``ids`` (e.g. the sample submission's), the rows follow that list, an id without
    detections gets an empty PredictionString, and a detection for an id outside it is an error.
    ``check`` is given the written file before it is renamed into place (see
    :func:`tfod.runfolder.atomic_write`).
    """
    path = Path(path)
    ids = list(detections) if ids is None else list(ids)
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()].tolist()
    if duplicated:
        raise ValueError(f"ids listed twice: {duplicated[:5]}")
    unknown = set(detections) - set(ids)
    if unknown:
        raise ValueError(f"{len(unknown)} detected image(s) not in ids, e.g. {sorted(unknown)[:3]}")
    with atomic_write(path, newline="", check=check) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SUBMISSION_HEADER)
        for patient_id in ids:
            image = detections.get(patient_id, ImageBoxes.empty())
            writer.writerow([patient_id, prediction_string(image)])
    return path
