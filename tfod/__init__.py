"""tfod: RSNA pneumonia detection on the TensorFlow 2 Object Detection API.

One module per stage; see README.md for the data flow. Modules that use TensorFlow or the
OD API import :mod:`tfod.compat` first.
"""

__version__ = "0.1.0"
