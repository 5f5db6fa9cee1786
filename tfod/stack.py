"""Which Python gets which TensorFlow, and whether the installed one can run the OD API.

Pure Python (no TensorFlow import): safe on a broken stack. ``make`` and the Dockerfile run it
before pip as a plain script, ``python3 tfod/stack.py``, which prints the stack's name (its
folder under ``requirements/``) or, for a Python no stack supports, one line naming the
supported versions (exit 2).

* ``tf2.15``: TensorFlow 2.15, whose bundled Keras 2 the OD API was written for. Its wheels
  stop at Python 3.11; tfod needs 3.10 or newer.
* ``tf2.21``: TensorFlow 2.21, whose own Keras is Keras 3, which the OD API cannot use. It runs
  on tf-keras (Keras 2 as a package), which TensorFlow routes ``tf.keras`` to when
  ``TF_USE_LEGACY_KERAS=1``: ``import tfod`` sets that unless it is set already.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"
FIRST_KERAS_3_TF = (2, 16)
MIN_TF = (2, 13)
REPO = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """The installed stack cannot run the Object Detection API."""


@dataclass(frozen=True)
class Stack:
    name: str  # its pins' folder under requirements/
    pythons: tuple[tuple[int, int], ...]
    tensorflow: str  # the pinned release, as in requirements/<name>/runtime.txt

    @property
    def requirements(self) -> str:
        """Its runtime pins, relative to the repository."""
        return f"requirements/{self.name}/runtime.txt"

    def __str__(self) -> str:
        """'3.12 and 3.13 (TensorFlow 2.21.0)'."""
        pythons = " and ".join(f"{major}.{minor}" for major, minor in self.pythons)
        return f"{pythons} (TensorFlow {self.tensorflow})"


STACKS = (
    Stack("tf2.15", ((3, 10), (3, 11)), "2.15.1"),
    Stack("tf2.21", ((3, 12), (3, 13)), "2.21.0"),
)


def supported_pythons() -> str:
    """'3.10 and 3.11 (TensorFlow 2.15.1), 3.12 and 3.13 (TensorFlow 2.21.0)'."""
    return ", ".join(str(stack) for stack in STACKS)


def stack_for_python(version: tuple[int, int] | None = None) -> Stack:
    """The stack for Python ``(major, minor)`` (default: the running one), or StackError."""
    major, minor = version or sys.version_info[:2]
    for stack in STACKS:
        if (major, minor) in stack.pythons:
            return stack
    raise StackError(f"Python {major}.{minor} is not supported: tfod runs on Python "
                     f"{supported_pythons()}")


def parse_version(version: str) -> tuple[int, int]:
    """'2.15.1' -> (2, 15); '2.16.0rc1' -> (2, 16)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise StackError(f"cannot read the version {version!r}")
    return int(match.group(1)), int(match.group(2))


def keras_in_use(tf) -> tuple[str, str] | None:
    """(package, version) of the Keras behind ``tf.keras``: ('keras', '2.15.0'),
    ('tf_keras', '2.21.0'), ('keras', '3.15.1'); None where none loads."""
    try:
        package = sys.modules[tf.keras.Model.__module__.split(".")[0]]
    except (ImportError, AttributeError, KeyError):
        return None
    return package.__name__, package.__version__


def check_tensorflow(tf) -> None:
    """Raise :class:`StackError` unless the imported module ``tf`` can run the OD API: before
    2.16 with its own Keras 2; from 2.16 only with tf-keras behind ``tf.keras``."""
    version = tf.__version__
    parsed = parse_version(version)
    if parsed < MIN_TF:
        raise StackError(f"TensorFlow {version} is older than tfod supports; run `make venv` "
                         f"(Python {supported_pythons()})")
    if parsed < FIRST_KERAS_3_TF:
        return
    keras = keras_in_use(tf)
    if keras is None or parse_version(keras[1])[0] != 2:
        in_use = f"{keras[0]} {keras[1]}" if keras else "no Keras"
        raise StackError(
            f"TensorFlow {version} is installed with {in_use} behind tf.keras, but the Object "
            f"Detection API cannot use Keras 3: install tf-keras of TensorFlow's minor version "
            f"and set {LEGACY_KERAS_VARIABLE}=1 before TensorFlow is imported (`import tfod` "
            f"does), or run `make venv`, which installs {STACKS[-1].requirements}")


def read_pins(path: Path) -> dict[str, str]:
    """``{distribution: version}`` of a requirements file (comments dropped); StackError
    naming the file and line of an entry that is not ``name==version``."""
    if not path.is_file():
        raise StackError(f"{path}: missing (tfod installed without its repository?)")
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.split("#")[0].strip()
        if not entry:
            continue
        name, separator, version = entry.partition("==")
        if not separator or not name.strip() or not version.strip():
            raise StackError(f"{path}:{number}: {entry!r} is not name==version")
        pins[name.strip()] = version.strip()
    return pins


def main() -> int:
    try:
        print(stack_for_python().name)
    except StackError as error:
        print(f"{sys.executable}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
