"""The small fixes that let the pinned Object Detection API run on today's stack.

Import this module before anything from ``object_detection`` (``import tfod.compat`` does it;
every tfod module that touches the OD API imports it first). It changes no installed file:
each fix puts back a name that a newer library removed, and only when it is missing.

Fixes, and why:

* ``control_flow_ops``: tf-slim 1.1.0 (used by the OD API's decoders and metrics) calls
  ``control_flow_ops.case``, ``cond``, ``while_loop`` and ``Assert``. TensorFlow 2.13 moved
  them to their own modules, so training fails at the first step with ``AttributeError``.
* numpy aliases: the OD API's ``utils/metrics.py``, ``coco_evaluation.py`` and ``lvis`` use
  ``np.float``, ``np.int`` and ``np.bool``, removed in numpy 1.24.
* Pillow ``getsize``: pydicom 3 needs Pillow >= 10 to decode the RSNA JPEG DICOMs, but the
  OD API's ``visualization_utils`` (eval images in TensorBoard) calls ``font.getsize``,
  removed in Pillow 10. We put it back, computed from ``getbbox``.
* TensorFlow >= 2.16 ships Keras 3, which the OD API cannot use: importing this module
  refuses TensorFlow 2.16+ unless tf-keras is behind ``tf.keras``
  (:func:`tfod.stack.check_tensorflow`), with a clear message instead of a failure deep
  inside model building.
* ``tensorflow_io`` on Python 3.13: tensorflow-io has no wheels for it, yet the OD API's model
  builder imports the DeepMAC meta-architecture, whose module imports ``tensorflow_io`` at the
  top. Where it is not installed, an empty module stands in; only DeepMAC (no tfod model) would
  use it, and an attribute of it raises AttributeError naming the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
from PIL import ImageFont

from tfod.stack import check_tensorflow

_CONTROL_FLOW_NAMES = {
    "case": ("tensorflow.python.ops.control_flow_case", "case"),
    "cond": ("tensorflow.python.ops.cond", "cond"),
    "while_loop": ("tensorflow.python.ops.while_loop", "while_loop"),
    "Assert": ("tensorflow.python.ops.control_flow_assert", "Assert"),
}
_NUMPY_ALIASES = {"float": float, "int": int, "bool": bool, "object": object, "str": str}


def _fix_control_flow_ops() -> None:
    from tensorflow.python.ops import control_flow_ops

    for name, (module_name, attribute) in _CONTROL_FLOW_NAMES.items():
        if not hasattr(control_flow_ops, name):
            setattr(
                control_flow_ops, name, getattr(importlib.import_module(module_name), attribute)
            )


def _fix_numpy_aliases() -> None:
    for name, builtin in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, builtin)


def _font_getsize(font, text, *args, **kwargs):
    left, top, right, bottom = font.getbbox(text, *args, **kwargs)
    return right, bottom


def _fix_pillow_getsize() -> None:
    for cls in (ImageFont.FreeTypeFont, ImageFont.ImageFont):
        if not hasattr(cls, "getsize"):
            cls.getsize = _font_getsize


def is_repeated(field) -> bool:
    """Whether a protobuf ``FieldDescriptor`` is repeated: protobuf 7 (the TensorFlow 2.21
    stack) replaced ``label`` with ``is_repeated``, which protobuf 4 (TensorFlow 2.15) lacks."""
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


class _AbsentTensorflowIo(types.ModuleType):
    """Stands in for tensorflow_io where it is not installed."""

    def __getattr__(self, name):
        raise AttributeError(f"tensorflow_io.{name}: tensorflow-io is not installed (it has no "
                             f"wheels for Python {sys.version_info[0]}.{sys.version_info[1]}); "
                             f"only the OD API's DeepMAC uses it")


def _fix_absent_tensorflow_io() -> None:
    if "tensorflow_io" not in sys.modules and importlib.util.find_spec("tensorflow_io") is None:
        sys.modules["tensorflow_io"] = _AbsentTensorflowIo("tensorflow_io")


def fixes_in_effect() -> dict[str, bool]:
    """Which fixes are active now (for ``tfod-doctor``)."""
    from tensorflow.python.ops import control_flow_ops

    return {
        "tf-slim control_flow_ops names": all(
            hasattr(control_flow_ops, n) for n in _CONTROL_FLOW_NAMES
        ),
        "numpy np.float/np.int/np.bool": all(name in np.__dict__ for name in _NUMPY_ALIASES),
        "Pillow FreeTypeFont.getsize": hasattr(ImageFont.FreeTypeFont, "getsize"),
        "tensorflow_io importable (DeepMAC)": "tensorflow_io" in sys.modules
        or importlib.util.find_spec("tensorflow_io") is not None,
    }


def apply() -> None:
    """Check the TensorFlow version and apply every fix (idempotent)."""
    import tensorflow as tf

    check_tensorflow(tf)
    _fix_control_flow_ops()
    _fix_numpy_aliases()
    _fix_pillow_getsize()
    _fix_absent_tensorflow_io()


apply()
