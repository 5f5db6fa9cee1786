"""Which TensorFlow the OD API runs on (pure Python: safe to import on a broken stack)."""

from __future__ import annotations

import re

MIN_TF = (2, 13)
MAX_TF_EXCLUSIVE = (2, 16)
PINNED_TF = "2.15.1"


class StackError(RuntimeError):
    """The installed stack cannot run the Object Detection API."""


def parse_version(version: str) -> tuple[int, int]:
    """'2.15.1' -> (2, 15); '2.16.0rc1' -> (2, 16)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise StackError(f"cannot read the TensorFlow version {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_tensorflow(version: str) -> None:
    """Raise :class:`StackError` unless ``version`` is a TensorFlow the OD API runs on."""
    parsed = parse_version(version)
    if parsed >= MAX_TF_EXCLUSIVE:
        raise StackError(
            f"TensorFlow {version} is installed, but the Object Detection API needs TensorFlow "
            f"< 2.16 (2.16 switched to Keras 3, which the OD API cannot use). Install the pinned "
            f"stack: `make venv`, or `pip install -r requirements/runtime.txt` "
            f"(tensorflow=={PINNED_TF})."
        )
    if parsed < MIN_TF:
        raise StackError(
            f"TensorFlow {version} is older than tfod supports; install tensorflow=={PINNED_TF}."
        )
