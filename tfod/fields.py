"""The one parser of numbers in the fields of tfod's CSVs (labels, detections, submissions,
outside models' files, probabilities): every refusal names the file, the line and the field."""
from __future__ import annotations

import math

from tfod.errors import FormatError


def parse_number(path, row: int, name: str, text: str) -> float:
    """``text`` of the field ``name`` as a finite number; :class:`FormatError` naming the
    file, the line and the field otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise FormatError(path, row, f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FormatError(path, row, f"{name} {text!r} is not finite")
    return value
