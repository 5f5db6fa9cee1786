"""The one reader of the official labels CSV's rows (``patientId,x,y,width,height,Target``).

The converter and the evaluation both read the labels through :func:`read_label_rows`, so the
same row is accepted or refused by the same rules; only what happens to a refused row differs,
and the caller chooses it:

* ``strict=True`` (scoring, the ensemble, cross-validation: :func:`tfod.detections.read_labels`):
  the first bad row raises :class:`tfod.errors.FormatError` naming the file, the line and the
  reason;
* ``strict=False`` (conversion): bad rows come back as :class:`BadRow` entries, to be listed as
  skipped inputs, and parsing goes on.

A row is bad when its patientId is empty, its Target is not 0 or 1, a Target 0 row has box
values, or a Target 1 row lacks a finite number for x, y, width or height or has a width or
height that is not positive (a zero-size box can match nothing). A file that cannot be read as
a whole (missing, empty, tab-separated, a required column absent) always raises ``BadInput``.

Line numbers are the file's own (the header is line 1), as a text editor shows them. Header
names may carry spaces and a trailing comma; extra columns are ignored.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tfod.errors import BadInput, FormatError
from tfod.fields import parse_number

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
BOX_COLUMNS = ("x", "y", "width", "height")
FIRST_DATA_LINE = 2


@dataclass(frozen=True)
class LabelRow:
    """One accepted row: ``box`` is pixel ``x, y, width, height`` for Target 1, else None."""

    line: int
    patient_id: str
    target: int
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class BadRow:
    """One refused row and why."""

    line: int
    patient_id: str
    reason: str


def read_label_rows(path, strict: bool) -> tuple[list[LabelRow], list[BadRow]]:
    """Every row of the labels CSV at ``path``: (accepted rows, refused rows), in file order.

    With ``strict`` the first refused row raises :class:`BadInput` instead.
    """
    rows, bad = [], []
    for line, fields in _data_rows(Path(path)):
        try:
            rows.append(_parsed(path, line, fields))
        except FormatError as error:
            if strict:
                raise
            bad.append(BadRow(line, fields.get("patientId", ""), error.reason))
    return rows, bad


def _data_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: stripped text})`` per non-blank data row; ``{'?': reason}`` added
    when the row's field count is wrong."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            lines = list(csv.reader(stream))
    except UnicodeDecodeError:
        raise FormatError(path, None, "not a text CSV file") from None
    except (OSError, csv.Error) as error:
        raise BadInput(f"cannot read the labels CSV ({error})", path) from error
    header = _header(path, lines)
    for line, raw in enumerate(lines[1:], start=FIRST_DATA_LINE):
        fields = [field.strip() for field in raw]
        while len(fields) > len(header) and not fields[-1]:
            fields.pop()  # a trailing comma
        if not any(fields):
            continue
        row = dict(zip(header, fields, strict=False))
        if len(fields) != len(header):
            row["?"] = f"{len(fields)} fields, the header has {len(header)}: {raw}"
        yield line, row


def _header(path: Path, lines: list[list[str]]) -> list[str]:
    """The column names of the first line, checked for the required columns."""
    if not lines or not any(field.strip() for field in lines[0]):
        raise BadInput(f"empty file; expected the header {','.join(LABEL_COLUMNS)}", path, 1)
    names = [name.strip() for name in lines[0]]
    while names and not names[-1]:
        names.pop()  # a trailing comma
    if len(names) == 1 and ("\t" in names[0] or ";" in names[0]):
        raise BadInput(f"the header {names[0]!r} is not comma-separated", path, 1)
    missing = [name for name in LABEL_COLUMNS if name not in names]
    if missing:
        raise BadInput(f"missing column(s) {', '.join(missing)}; the header is "
                       f"{','.join(names)}", path, 1)
    return names


def _parsed(path, line: int, fields: dict[str, str]) -> LabelRow:
    """The row as a :class:`LabelRow`; :class:`FormatError` saying why it cannot be used."""
    if "?" in fields:
        raise FormatError(path, line, fields["?"])
    if not fields["patientId"]:
        raise FormatError(path, line, "empty patientId")
    target = _target(path, line, fields["Target"])
    if target == 0:
        filled = {name: fields[name] for name in BOX_COLUMNS if fields[name]}
        if filled:
            raise FormatError(path, line, f"Target 0 row has box values {filled}; a negative "
                                          "row has none")
        return LabelRow(line, fields["patientId"], 0, None)
    box = tuple(parse_number(path, line, f"Target 1 row's {name}", fields[name])
                for name in BOX_COLUMNS)
    for name, value in zip(("width", "height"), box[2:], strict=True):
        if value <= 0:
            raise FormatError(path, line, f"box {name} must be positive, got {value:g}")
    return LabelRow(line, fields["patientId"], 1, box)


def _target(path, line: int, text: str) -> int:
    try:
        target = parse_number(path, line, "Target", text)
    except FormatError:
        target = None
    if target not in (0, 1):
        raise FormatError(path, line, f"Target must be 0 or 1, got {text!r}")
    return int(target)
