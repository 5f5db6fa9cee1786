"""The OD API pieces that both the trainer and the evaluator build from, through public APIs.

Nothing here assigns to an OD API or TensorFlow module, and nothing imports the OD API's
estimator-era modules (``inputs``, ``model_lib``, ``model_lib_v2``: they import
``tf.compat.v1.estimator``, which TensorFlow 2.16 removed). The model comes from
``model_builder``, the configs from ``config_util``; the forward pass, the train step, the
fine-tune checkpoint and the eval dict are ours, written from the model's own public
``provide_groundtruth`` / ``predict`` / ``loss`` / ``restore_from_objects`` and
``eval_util.result_dict_for_batched_example``, doing what ``model_lib_v2``'s
``eager_train_step``, ``load_fine_tune_checkpoint`` and ``prepare_eval_dict`` do.
"""
from __future__ import annotations

from collections.abc import Mapping

import tfod.compat  # noqa: F401  (before object_detection)

LOSS_KEY = "Loss/total_loss"


class TrainError(RuntimeError):
    """A training or evaluation run that cannot start or go on."""


# Label fields of the input pipeline -> the argument of ``DetectionModel.provide_groundtruth``
# that takes them (a list with one tensor per image).
GROUNDTRUTH_ARGUMENTS = {
    "groundtruth_boxes": "groundtruth_boxes_list",
    "groundtruth_classes": "groundtruth_classes_list",
    "groundtruth_weights": "groundtruth_weights_list",
    "groundtruth_confidences": "groundtruth_confidences_list",
    "groundtruth_instance_masks": "groundtruth_masks_list",
    "groundtruth_instance_mask_weights": "groundtruth_mask_weights_list",
    "groundtruth_is_crowd": "groundtruth_is_crowd_list",
    "groundtruth_group_of": "groundtruth_group_of_list",
    "groundtruth_area": "groundtruth_area_list",
}


def unstack_groundtruth(labels, unpad: bool) -> dict:
    """Batched labels -> one tensor per image for each field of :data:`GROUNDTRUTH_ARGUMENTS`,
    cut to the image's ``num_groundtruth_boxes`` with ``unpad`` (else padded, the padding
    boxes being all zero, which the models ignore)."""
    import tensorflow as tf
    from object_detection.core import standard_fields as fields

    counts = tf.unstack(labels[fields.InputDataFields.num_groundtruth_boxes])
    unstacked = {}
    for key in GROUNDTRUTH_ARGUMENTS.keys() & labels.keys():
        per_image = tf.unstack(labels[key])
        unstacked[key] = [value[:count] for value, count in zip(per_image, counts, strict=True)
                          ] if unpad else per_image
    return unstacked


def provide_groundtruth(model, labels, unpad: bool, training_step=None) -> None:
    """Give the batch's ground truth to ``model`` (before its ``loss``)."""
    groundtruth = unstack_groundtruth(labels, unpad)
    model.provide_groundtruth(
        **{GROUNDTRUTH_ARGUMENTS[key]: value for key, value in groundtruth.items()},
        training_step=training_step)


def losses_and_predictions(model, features, labels, unpad_groundtruth: bool,
                           add_regularization_loss: bool = True, training_step=None):
    """One forward pass with the loss: ``(losses, predictions)``, ``losses`` holding
    :data:`LOSS_KEY`. ``labels`` are batched as :mod:`tfod.train.inputs` gives them."""
    import tensorflow as tf
    from object_detection.core import standard_fields as fields

    provide_groundtruth(model, labels, unpad_groundtruth, training_step)
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


def train_step(model, optimizer, features, labels, train_config, num_replicas: int,
               training_step=None) -> dict:
    """One step of one replica: losses (divided by ``num_replicas``, so that the replicas'
    gradients sum to the batch's), their gradients (clipped to
    ``train_config.gradient_clipping_by_norm`` when set) applied by ``optimizer``."""
    import tensorflow as tf

    tf.keras.backend.set_learning_phase(True)  # Keras layers called without ``training``
    with tf.GradientTape() as tape:
        losses, _ = losses_and_predictions(
            model, features, labels, train_config.unpad_groundtruth_tensors,
            train_config.add_regularization_loss, training_step)
        losses = {name: value / num_replicas for name, value in losses.items()}
    variables = model.trainable_variables
    gradients = tape.gradient(losses[LOSS_KEY], variables)
    if train_config.gradient_clipping_by_norm > 0:
        gradients, _ = tf.clip_by_global_norm(gradients, train_config.gradient_clipping_by_norm)
    optimizer.apply_gradients(zip(gradients, variables, strict=True))
    return losses


def build_variables(strategy, model, batch, unpad_groundtruth: bool) -> None:
    """Run one batch through ``model`` so that every variable exists (Keras builds them on
    first use): an exponential-moving-average optimizer can only shadow what exists, and a
    fine-tune checkpoint can only fill what exists."""
    import tensorflow as tf

    @tf.function
    def forward(features, labels):
        losses_and_predictions(model, features, labels, unpad_groundtruth)

    strategy.run(forward, args=batch)


def load_fine_tune_checkpoint(model, train_config, strategy, dataset) -> None:
    """Fill ``model`` from ``train_config.fine_tune_checkpoint`` (an object-based, V2
    checkpoint): the parts its ``fine_tune_checkpoint_type`` names (``detection``: backbone and
    box predictor features; ``classification``: the backbone), through the model's own
    ``restore_from_objects``. The first batch of ``dataset`` (distributed by ``strategy``)
    builds the variables first when ``run_fine_tune_checkpoint_dummy_computation`` is set. A
    checkpoint that does not match the model raises."""
    import tensorflow as tf
    from object_detection.protos import train_pb2

    path = train_config.fine_tune_checkpoint
    names = [name for name, _ in tf.train.list_variables(path)]
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
        raise TrainError(f"fine-tune checkpoint {path} is not an object-based (TF2) checkpoint")
    if train_config.fine_tune_checkpoint_version == train_pb2.CheckpointVersion.V1:
        raise TrainError("fine_tune_checkpoint_version V1 is not supported: use a TF2 (V2) "
                         "checkpoint")
    if train_config.run_fine_tune_checkpoint_dummy_computation:
        build_variables(strategy, model, next(iter(dataset)),
                        train_config.unpad_groundtruth_tensors)
    parts = model.restore_from_objects(
        fine_tune_checkpoint_type=train_config.fine_tune_checkpoint_type)
    tf.train.Checkpoint(**parts).restore(path).expect_partial().assert_existing_objects_matched()


def sum_over_replicas(strategy, values: Mapping) -> dict:
    """Each per-replica value summed over the replicas of ``strategy``."""
    import tensorflow as tf

    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in values.items()}


def prepare_eval_dict(detections, labels, features) -> tuple[dict, bool]:
    """The OD API evaluators' dict of one batch (``eval_util.result_dict_for_batched_example``
    of the detections, the labels with 1-based class ids, the hash keys and, when the batch
    has them, original images), and whether the model is class-agnostic (no
    ``detection_classes``)."""
    import tensorflow as tf
    from object_detection import eval_util
    from object_detection.core import standard_fields as fields

    from tfod.train.inputs import HASH_KEY, LABEL_OFFSET

    inputs = fields.InputDataFields
    groundtruth = dict(labels)
    class_agnostic = fields.DetectionResultFields.detection_classes not in detections
    one_hot = groundtruth[inputs.groundtruth_classes]
    if class_agnostic:
        one_hot = tf.ones_like(one_hot[..., :1])
    groundtruth[inputs.groundtruth_classes] = tf.argmax(one_hot, axis=2) + LABEL_OFFSET
    original = inputs.original_image in features
    result = eval_util.result_dict_for_batched_example(
        features[inputs.original_image if original else inputs.image], features[HASH_KEY],
        detections, groundtruth, class_agnostic=class_agnostic, scale_to_absolute=True,
        original_image_spatial_shapes=(features[inputs.original_image_spatial_shape]
                                       if original else None),
        true_image_shapes=features[inputs.true_image_shape][:, :3] if original else None)
    return result, class_agnostic
