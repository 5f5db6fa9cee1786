"""Parse and validate the RSNA label tables, one record per patient.

Three tables, all optional except the labels for a training set:

* labels (``stage_2_train_labels.csv``): ``patientId,x,y,width,height,Target``, one row per
  box, one row with empty box fields for a negative image; boxes in pixels, ``x,y`` top-left;
* class info (``stage_2_detailed_class_info.csv``): ``patientId,class``, one row per label row,
  class in :data:`CLASSES`;
* DICOM headers (``stage_2_train_dicom_headers.csv.gz``): ``PatientID``, ``ViewPosition``,
  ``PatientSex``, ``PatientAge`` among other columns.

A bad row never stops parsing and is never dropped silently: it becomes an :class:`Issue`
naming the file, its line number (the header is line 1) and the reason. The labels' rows are
parsed by :mod:`tfod.labelrows` (shared with the evaluation, which uses its strict policy). A
table that cannot be read at all (missing, empty, header only, a column missing) raises
:class:`tfod.errors.BadInput`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfod.errors import BadInput
from tfod.labelrows import FIRST_DATA_LINE, read_label_rows

CLASS_COLUMNS = ("patientId", "class")
HEADER_COLUMNS = ("PatientID", "ViewPosition", "PatientSex", "PatientAge")
POSITIVE_CLASS = "Lung Opacity"
CLASSES = ("Normal", "No Lung Opacity / Not Normal", POSITIVE_CLASS)


@dataclass(frozen=True)
class Issue:
    """One input that was skipped or changed: where it is and why."""

    source: str  # the file
    rows: tuple[int, ...]  # its CSV line numbers (header = line 1); () for a whole file
    patient_id: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{','.join(map(str, self.rows))}" if self.rows else self.source
        who = f" [{self.patient_id}]" if self.patient_id else ""
        return f"{where}{who}: {self.reason}"

    def as_dict(self) -> dict:
        return {"source": self.source, "rows": list(self.rows), "patientId": self.patient_id,
                "reason": self.reason}


@dataclass
class PatientLabels:
    """Everything the labels say about one patient's image."""

    patient_id: str
    target: int  # 1 when any accepted row has Target 1
    boxes: np.ndarray  # (N, 4) pixel x, y, width, height
    box_rows: tuple[int, ...]  # the line of each box
    rows: tuple[int, ...]  # every accepted line of this patient
    label_class: str = ""  # from the class-info table, '' when not given
    view_position: str = ""  # from the headers table, '' when not given

    @property
    def stratum(self) -> str:
        """What the folds are stratified by: the 3-way class when known, else the target."""
        return self.label_class or f"Target {self.target}"


@dataclass
class LabelSet:
    """The parsed tables: per-patient labels plus every issue found on the way.

    ``issues`` are rows that were dropped; ``notes`` are patients kept with a caveat.
    """

    patients: dict[str, PatientLabels]
    issues: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)


def _read_table(path, columns) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise BadInput("file not found", path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise BadInput(f"not a readable CSV file ({error})", path) from error
    table.columns = [str(name).strip() for name in table.columns]
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise BadInput(f"missing column(s) {missing}; found {list(table.columns)}", path, 1)
    table = table[list(columns)].apply(lambda column: column.str.strip())
    table["line"] = np.arange(len(table)) + FIRST_DATA_LINE
    return table


def read_label_set(path) -> LabelSet:
    """Parse the labels CSV into one :class:`PatientLabels` per patient.

    Rows go through :func:`tfod.labelrows.read_label_rows` with the lenient policy: a bad row
    becomes an :class:`Issue`, as do duplicates and a patient's Target 0 rows beside boxes.
    """
    source = str(path)
    if not Path(path).is_file():
        raise BadInput("file not found", path)
    rows, bad = read_label_rows(path, strict=False)
    if not rows and not bad:
        raise BadInput("no data rows: the file holds only its header", path)
    issues = [Issue(source, (row.line,), row.patient_id, row.reason) for row in bad]
    good = [(row.patient_id, row.target, row.box, row.line) for row in rows]
    good, duplicates = _drop_duplicates(good, source)
    patients, conflicts = _group_by_patient(good, source)
    issues.extend(duplicates + conflicts)
    issues.sort(key=lambda issue: issue.rows)
    return LabelSet(patients, issues)


def _drop_duplicates(rows: list, source: str) -> tuple[list, list[Issue]]:
    seen: dict[tuple, int] = {}
    kept, issues = [], []
    for patient_id, target, box, line in rows:
        key = (patient_id, target, box)
        if key in seen:
            issues.append(Issue(source, (line,), patient_id, f"duplicate of line {seen[key]}"))
        else:
            seen[key] = line
            kept.append((patient_id, target, box, line))
    return kept, issues


def _group_by_patient(rows: list, source: str) -> tuple[dict[str, PatientLabels], list[Issue]]:
    by_patient: dict[str, list] = {}
    for row in rows:
        by_patient.setdefault(row[0], []).append(row)
    patients, issues = {}, []
    for patient_id, patient_rows in by_patient.items():
        positives = [row for row in patient_rows if row[1] == 1]
        negatives = [row for row in patient_rows if row[1] == 0]
        if positives and negatives:
            lines = tuple(row[3] for row in negatives)
            issues.append(Issue(source, lines, patient_id,
                                f"patientId also has Target 1 rows (line {positives[0][3]}, ...):"
                                " this Target 0 row is ignored and the boxes are kept"))
        kept = positives or negatives
        patients[patient_id] = PatientLabels(
            patient_id=patient_id,
            target=1 if positives else 0,
            boxes=np.array([row[2] for row in positives], dtype=np.float64).reshape(-1, 4),
            box_rows=tuple(row[3] for row in positives),
            rows=tuple(row[3] for row in kept),
        )
    return patients, issues


def add_class_info(labels: LabelSet, path) -> None:
    """Read the class-info CSV into ``labels`` (``label_class``), adding its issues."""
    source = str(path)
    table = _read_table(path, CLASS_COLUMNS)
    seen: dict[str, tuple[str, int]] = {}
    for row in table.itertuples(index=False):
        problem = _class_problem(row, labels.patients, seen)
        if problem:
            labels.issues.append(Issue(source, (row.line,), row.patientId, problem))
            continue
        if row.patientId not in seen:
            seen[row.patientId] = (row[1], row.line)
            labels.patients[row.patientId].label_class = row[1]
    for patient_id in sorted(set(labels.patients) - set(seen)):
        patient = labels.patients[patient_id]
        labels.notes.append(Issue(source, (), patient_id,
                                  f"no class row; stratified by {patient.stratum!r}"))


def _class_problem(row, patients: dict[str, PatientLabels], seen: dict) -> str:
    label_class = row[1]
    if label_class not in CLASSES:
        return f"unknown class {label_class!r}; expected one of {list(CLASSES)}"
    if row.patientId not in patients:
        return "no usable label row for this patientId"
    if row.patientId in seen and seen[row.patientId][0] != label_class:
        first, line = seen[row.patientId]
        return f"class {label_class!r} contradicts {first!r} on line {line}; kept {first!r}"
    target = patients[row.patientId].target
    if (label_class == POSITIVE_CLASS) != (target == 1):
        return f"class {label_class!r} contradicts Target {target}; class ignored"
    return ""


def add_headers(labels: LabelSet, path) -> None:
    """Read the DICOM headers table into ``labels`` (``view_position``), adding its issues."""
    source = str(path)
    table = _read_table(path, HEADER_COLUMNS)
    for row in table.itertuples(index=False):
        patient = labels.patients.get(row.PatientID)
        if row.ViewPosition not in ("AP", "PA"):
            labels.issues.append(Issue(source, (row.line,), row.PatientID,
                                       f"ViewPosition must be AP or PA, got {row.ViewPosition!r}"))
        elif patient is not None:
            patient.view_position = row.ViewPosition


def load_labels(labels_csv, class_info_csv=None, headers_csv=None) -> LabelSet:
    """Read the labels and, when given, the class-info and headers tables into one set."""
    labels = read_label_set(labels_csv)
    if class_info_csv:
        add_class_info(labels, class_info_csv)
    if headers_csv:
        add_headers(labels, headers_csv)
    return labels
