"""Stage: an image-level pneumonia classifier whose probability gates the detectors' boxes.

``data`` (converted records -> tf.data), ``model`` (Keras applications backbones and the
SavedModel signature), ``train`` (the run folder), ``predict`` (DICOMs, lists or records ->
``patientId,probability``), ``evaluate`` (ROC AUC, F1, ROC plot). See docs/classify.md.
"""
