"""tfod: RSNA pneumonia detection on the TensorFlow 2 Object Detection API.

One module per stage; see README.md for the data flow. Modules that use TensorFlow or the
OD API import :mod:`tfod.compat` first. On TensorFlow 2.16+ the OD API needs tf-keras behind
``tf.keras``: where tf-keras is installed, importing tfod asks TensorFlow for it
(``TF_USE_LEGACY_KERAS=1``, unless the variable is set already). TensorFlow 2.15 has no use
for it and would look for tf-keras if asked.
"""

import importlib.util
import os

if importlib.util.find_spec("tf_keras") is not None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
