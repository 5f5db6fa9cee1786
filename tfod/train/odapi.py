"""The OD API pieces that both the trainer and the evaluator build from, through public APIs.

Nothing here assigns to an OD API or TensorFlow module: the model comes from
``model_builder``, the configs from ``config_util``, the forward pass from the model's own
``provide_groundtruth`` / ``predict`` / ``loss`` (the calls ``model_lib_v2``'s private
``_compute_losses_and_predictions_dicts`` makes), so a run does not depend on OD API
internals that change between releases.
"""
from __future__ import annotations

from pathlib import Path

import tfod.compat  # noqa: F401  (before object_detection)

LOSS_KEY = "Loss/total_loss"


class TrainError(RuntimeError):
    """A training or evaluation run that cannot start or go on."""


def read_configs(pipeline_config) -> dict:
    """The pipeline config as ``config_util``'s dict of protos."""
    from tfod.config.pipeline import read_configs as read_pipeline

    path = Path(pipeline_config)
    if not path.is_file():
        raise TrainError(f"pipeline config {path} does not exist")
    return read_pipeline(path)


def losses_and_predictions(model, features, labels, unpad_groundtruth: bool,
                           add_regularization_loss: bool = True, training_step=None):
    """One forward pass with the loss: ``(losses, predictions)``, ``losses`` holding
    :data:`LOSS_KEY`. ``labels`` are batched as the OD API's input functions give them."""
    import tensorflow as tf
    from object_detection import model_lib
    from object_detection.core import standard_fields as fields

    labels = model_lib.unstack_batch(labels, unpad_groundtruth_tensors=unpad_groundtruth)
    model_lib.provide_groundtruth(model, labels, training_step=training_step)
    shapes = features[fields.InputDataFields.true_image_shape]
    predictions = model.predict(features[fields.InputDataFields.image], shapes,
                                **model.get_side_inputs(features))
    losses = dict(model.loss(predictions, shapes))
    terms = list(losses.values())
    regularization = model.regularization_losses() if add_regularization_loss else []
    if regularization:
        losses["Loss/regularization_loss"] = tf.add_n(regularization)
        terms.append(losses["Loss/regularization_loss"])
    losses[LOSS_KEY] = tf.add_n(terms)
    return losses, predictions


def build_variables(strategy, model, batch, unpad_groundtruth: bool) -> None:
    """Run one batch through ``model`` so that every variable exists (Keras builds them on
    first use): an exponential-moving-average optimizer can only shadow what exists."""
    import tensorflow as tf

    @tf.function
    def forward(features, labels):
        losses_and_predictions(model, features, labels, unpad_groundtruth)

    strategy.run(forward, args=batch)
