"""The classifier: a Keras applications backbone with a small head, and its SavedModel.

Backbones are built with ``weights=None`` (nothing is downloaded) or from a local weights file
(for example Keras' ImageNet ``*_notop.h5``). Each backbone's own ``preprocess_input`` is part
of the model, so the model takes 0..255 RGB and a local ImageNet file sees what it was trained
on. The output is ``[p(opacity)]`` (sigmoid) or the 3-way class probabilities (softmax) whose
last column is the opacity; :func:`opacity_probability` reads either.

The exported SavedModel's ``serving_default`` takes a batch of encoded JPEG/PNG images
(``encoded``: string ``[N]``) and returns ``probability`` (float32 ``[N]``): decoding and
resizing (:func:`tfod.classify.data.decode_image`) travel with the model.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tfod.classify.data import decode_image
from tfod.errors import BadInput

_APPS = tf.keras.applications
BACKBONES = {  # name: (constructor, the backbone's input preprocessing)
    "densenet121": (_APPS.DenseNet121, _APPS.densenet.preprocess_input),
    "resnet50": (_APPS.ResNet50, _APPS.resnet50.preprocess_input),
    "efficientnetb0": (_APPS.EfficientNetB0, _APPS.efficientnet.preprocess_input),
    "mobilenetv2": (_APPS.MobileNetV2, _APPS.mobilenet_v2.preprocess_input),
}
DEFAULT_BACKBONE = "densenet121"  # CheXNet's
MIN_IMAGE_SIZE = 32  # the smallest input every backbone accepts
DROPOUT = 0.2
SERVING_KEY, INPUT_KEY, OUTPUT_KEY = "serving_default", "encoded", "probability"


def check_weights_file(weights: str | None) -> None:
    """:class:`BadInput` naming ``weights`` unless it is None or an HDF5 file (Keras' weights
    format, e.g. ``densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5``)."""
    import h5py  # TensorFlow's own dependency, Keras' weights format

    if weights is None:
        return
    if not Path(weights).is_file():
        raise BadInput("--weights is not a file", weights)
    if not h5py.is_hdf5(weights):
        raise BadInput("--weights is not an HDF5 weights file (Keras' *_notop.h5)", weights)


def build_classifier(backbone: str, image_size: int, num_outputs: int = 1,
                     weights: str | None = None,
                     batchnorm_momentum: float | None = None) -> tf.keras.Model:
    """A ``backbone`` classifier for ``image_size`` squares with ``num_outputs`` outputs.

    ``batchnorm_momentum`` replaces the backbone's (0.99 to 0.999): the moving statistics
    that inference uses then follow the data within a few hundred steps instead of thousands,
    which short runs and small data sets need (without it, a short run's model answers every
    image alike).
    """
    if backbone not in BACKBONES:
        raise BadInput(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")
    check_weights_file(weights)
    constructor, preprocess = BACKBONES[backbone]
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    try:
        base = constructor(include_top=False, weights=weights, pooling="avg",
                           input_shape=(image_size, image_size, 3))
    except ValueError as error:
        if weights is None:
            raise
        raise BadInput(f"not {backbone} weights without the top ({error})", weights) from None
    if batchnorm_momentum is not None:
        base = with_batchnorm_momentum(base, batchnorm_momentum)
    features = base(tf.keras.layers.Lambda(preprocess, name="preprocess")(inputs))
    features = tf.keras.layers.Dropout(DROPOUT)(features)
    activation = "sigmoid" if num_outputs == 1 else "softmax"
    outputs = tf.keras.layers.Dense(num_outputs, activation=activation, dtype="float32",
                                    name="opacity")(features)
    return tf.keras.Model(inputs, outputs, name=f"classifier_{backbone}")


def with_batchnorm_momentum(model: tf.keras.Model, momentum: float) -> tf.keras.Model:
    """A copy of ``model`` (same weights) whose batch normalization layers use ``momentum``."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            config["momentum"] = momentum
        return type(layer).from_config(config)

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def opacity_probability(outputs: tf.Tensor) -> tf.Tensor:
    """``[N]`` opacity probabilities from binary ``[N, 1]`` or 3-way ``[N, 3]`` outputs."""
    return outputs[:, -1]


class OpacityAUC(tf.keras.metrics.AUC):
    """ROC AUC of the opacity probability, for binary and 3-way outputs alike."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(opacity_probability(y_true), opacity_probability(y_pred),
                                    sample_weight)


class Serving(tf.Module):
    """Encoded images in, opacity probabilities out: what the SavedModel serves."""

    def __init__(self, model: tf.keras.Model):
        super().__init__()
        # Track the variables, not the Keras model: saving a tracked Keras model also traces
        # every layer's call for Keras' own loader, which takes minutes and is never used here.
        self.model_variables = list(model.variables)
        size = int(model.input_shape[1])
        spec = tf.TensorSpec([size, size, 3], tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def serve(encoded):
            images = tf.map_fn(lambda one: decode_image(one, size), encoded,
                               fn_output_signature=spec)
            return {OUTPUT_KEY: opacity_probability(model(images, training=False))}

        self.serve = serve

    def __call__(self, encoded) -> tf.Tensor:
        return self.serve(tf.constant(encoded, tf.string))[OUTPUT_KEY]


def export_saved_model(model: tf.keras.Model, path) -> Path:
    """Write ``model`` as a SavedModel at ``path`` with the ``serving_default`` signature."""
    module = Serving(model)
    tf.saved_model.save(module, str(path), signatures={SERVING_KEY: module.serve})
    return Path(path)


def load_saved_model(path):
    """The ``serving_default`` function of a SavedModel written by :func:`export_saved_model`."""
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, tf.errors.OpError, ValueError) as error:
        raise BadInput(f"not a readable SavedModel ({error})", path) from error
    if SERVING_KEY not in loaded.signatures:
        raise BadInput(f"SavedModel has no {SERVING_KEY!r} signature", path)
    serve = loaded.signatures[SERVING_KEY]

    def predict(encoded) -> tf.Tensor:
        return serve(**{INPUT_KEY: tf.constant(encoded, tf.string)})[OUTPUT_KEY]

    predict.saved_model = loaded  # keep the variables alive with the function
    return predict
