"""The input pipeline of training and evaluation: our records -> batches the detection model
takes, built from the OD API's public builders and core modules only.

:func:`train_dataset` and :func:`eval_dataset` give what the OD API's ``inputs.train_input`` and
``inputs.eval_input`` give (same ``(features, labels)`` keys, dtypes, static shapes and values
with augmentation off), without importing ``object_detection.inputs`` (it imports
``tf.compat.v1.estimator``, gone in TensorFlow 2.16). Each record goes through:

1. parse (the keys of :mod:`tfod.data.records`) and decode;
2. the config's ``data_augmentation_options`` through ``preprocessor_builder`` and
   ``core.preprocessor.preprocess`` (or, where that is exact and faster, drawn before decoding
   by :mod:`tfod.train.augment`; below);
3. the model's own ``preprocess`` (resize and normalize, ``true_image_shape``), boxes moved into
   the frame of the padded image, classes one-hot;
4. ground truth padded (or clipped) to ``max_number_of_boxes``, so that any batch size works.

Where it is faster than ``inputs.train_input``, and why the result is the same:

* grayscale records (every record ``tfod-convert`` writes) are decoded, augmented and resized on
  one channel and repeated to three only at the model's size. Decoding a grayscale JPEG to
  three channels repeats the one, and the flips, crops, brightness and contrast of
  :data:`CHANNELWISE_AUGMENTATIONS` and the resize treat each channel alone, so the pixels are
  the same with less work. Any other augmentation keeps three channels throughout;
* with a ``fixed_shape_resizer`` the one-channel image is resized by the model's own resizer
  before ``model.preprocess``, whose resize to the same size then returns it unchanged;
* with such records and resizer, and augmentations that are flips and crops followed by
  brightness and contrast changes (the SSD config's), the flips and crops are drawn before
  decoding (:mod:`tfod.train.augment`, exact): only the window they keep is decoded
  (``tf.io.decode_and_crop_jpeg``), mirrored on ``[height, width]``, and brightness and
  contrast run on that window with ``core.preprocessor``'s arithmetic minus its copies of a
  one-channel image. They stay before the resize: neither commutes with it exactly, and
  neither does a flip with the OD API's (``align_corners=False``) bilinear resize;
* one ``tf.data`` map runs parse-to-padding in parallel (``AUTOTUNE``; the OD API's runs
  ``map_with_legacy_function``), and batches are prefetched.
"""
from __future__ import annotations

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.data import records
from tfod.train import augment
from tfod.train.odapi import TrainError

HASH_KEY = "hash"  # features: the source id hashed to an int32, the evaluator's image key
HASH_BINS = 1 << 31
LABEL_OFFSET = 1  # class ids start at 1 in records and label maps, at 0 in one-hot classes

# Augmentations that treat every channel alike, so that they can run on one channel.
CHANNELWISE_AUGMENTATIONS = frozenset({
    "random_horizontal_flip", "random_vertical_flip", "random_rotation90", "random_crop_image",
    "ssd_random_crop", "ssd_random_crop_fixed_aspect_ratio", "random_adjust_brightness",
    "random_adjust_contrast", "random_jitter_boxes", "random_image_scale",
})


def train_dataset(train_config, train_input_config, model_config, model=None,
                  input_context=None):
    """Batches of ``(features, labels)`` for training, as ``inputs.train_input`` gives them:
    augmented, shuffled as the input reader says, repeated, batched per replica of
    ``input_context`` (whose pipelines share the record files). ``model`` (whose
    ``preprocess`` runs here) is built from ``model_config`` when not given."""
    options = {"use_bfloat16": train_config.use_bfloat16,
               "use_multiclass_scores": train_config.use_multiclass_scores,
               "merge_multiple_label_boxes": train_config.merge_multiple_label_boxes}
    if unsupported := [name for name, used in options.items() if used]:
        raise TrainError(f"tfod's input pipeline does not support {', '.join(unsupported)}")
    batch_size = train_config.batch_size
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    return _dataset(train_input_config, model or _build(model_config, True), model_config,
                    list(train_config.data_augmentation_options),
                    train_config.retain_original_images, batch_size, input_context)


def eval_dataset(eval_config, eval_input_config, model_config, model=None, batch_size=None):
    """Batches of ``(features, labels)`` for evaluation, as ``inputs.eval_input`` gives them:
    no augmentation, the original image at the model's size when
    ``eval_config.retain_original_images`` (for the side-by-side pictures), ``batch_size``
    (default ``eval_config.batch_size``) images a batch, ground truth padded to
    ``max_number_of_boxes``."""
    if eval_config.force_no_resize:
        raise TrainError("tfod's input pipeline does not support force_no_resize")
    return _dataset(eval_input_config, model or _build(model_config, False), model_config, [],
                    eval_config.retain_original_images, batch_size or eval_config.batch_size,
                    None)


def _build(model_config, is_training: bool):
    from object_detection.builders import model_builder

    return model_builder.build(model_config, is_training=is_training)


def _refuse_unsupported(reader) -> None:
    """Input options whose fields our records never hold, named instead of ignored."""
    from object_detection.protos import input_reader_pb2

    unsupported = {
        "input_type (only TF_EXAMPLE)": reader.input_type not in (
            input_reader_pb2.INPUT_DEFAULT, input_reader_pb2.TF_EXAMPLE),
        "num_additional_channels": reader.num_additional_channels > 0,
        "num_keypoints": reader.num_keypoints > 0,
        "load_multiclass_scores": reader.load_multiclass_scores,
        "load_context_features": reader.load_context_features,
        "load_dense_pose": reader.load_dense_pose,
        "load_track_id": reader.load_track_id,
        "sample_from_datasets_weights": bool(reader.sample_from_datasets_weights),
        "tf_record_input_reader (the only reader)":
            reader.WhichOneof("input_reader") != "tf_record_input_reader",
    }
    if names := [name for name, used in unsupported.items() if used]:
        raise TrainError(f"tfod's input pipeline does not support {', '.join(names)}")


def _dataset(reader, model, model_config, augmentations, retain_original: bool,
             batch_size: int, input_context):
    """Read the files of ``reader`` (sharded by ``input_context``, shuffled and repeated as
    ``reader`` says), transform each record, batch, prefetch."""
    import tensorflow as tf

    _refuse_unsupported(reader)
    files = _record_files(reader)
    example = _Transform(model, model_config, reader, augmentations, retain_original,
                         _is_grayscale(files[0]))
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if reader.shuffle:
        dataset = dataset.shuffle(reader.filenames_shuffle_buffer_size)
    if input_context is not None:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.repeat(reader.num_epochs or None)
    dataset = dataset.interleave(
        lambda name: tf.data.TFRecordDataset(name, buffer_size=8 * 1000 * 1000),
        cycle_length=min(reader.num_readers, len(files)), block_length=reader.read_block_length,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=not reader.shuffle)
    if reader.shuffle:
        dataset = dataset.shuffle(reader.shuffle_buffer_size)
    if reader.sample_1_of_n_examples > 1:
        dataset = dataset.shard(reader.sample_1_of_n_examples, 0)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=not reader.shuffle)
    dataset = dataset.batch(batch_size, drop_remainder=reader.drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _record_files(reader) -> list[str]:
    import tensorflow as tf

    patterns = list(reader.tf_record_input_reader.input_path)
    files = [name for pattern in patterns for name in tf.io.gfile.glob(pattern)]
    if not files:
        raise TrainError(f"no record file matches {patterns}")
    return files


def _is_grayscale(path: str) -> bool:
    """Whether the first image of the record file ``path`` has one channel."""
    import tensorflow as tf

    for serialized in tf.data.TFRecordDataset(path).take(1):
        parsed = tf.io.parse_single_example(
            serialized, {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        image = tf.io.decode_image(parsed[records.IMAGE_KEY], expand_animations=False)
        return int(image.shape[-1]) == 1
    return False


class _Transform:
    """One serialized record -> ``(features, labels)`` of one image (see the module docstring).

    With ``grayscale`` records (their first image has one channel) and augmentations that
    treat channels alike, it works on one channel and asserts that every image has just one.
    """

    def __init__(self, model, model_config, reader, augmentations, retain_original: bool,
                 grayscale: bool):
        from object_detection.builders import image_resizer_builder, preprocessor_builder
        from object_detection.protos import input_reader_pb2
        from object_detection.utils import config_util

        self.model = model
        self.num_classes = config_util.get_number_of_classes(model_config)
        resizer_config = config_util.get_image_resizer_config(model_config)
        self.resize = image_resizer_builder.build(resizer_config)
        self.spatial_shape = [None if size < 0 else size
                              for size in config_util.get_spatial_image_size(resizer_config)]
        self.max_boxes = reader.max_number_of_boxes
        self.load_masks = reader.load_instance_masks
        if self.load_masks and reader.mask_type != input_reader_pb2.PNG_MASKS:
            raise TrainError("tfod's records hold instance masks as PNGs: set mask_type: "
                             "PNG_MASKS")
        self.augmentations = [preprocessor_builder.build(step) for step in augmentations]
        names = [step.WhichOneof("preprocessing_step") for step in augmentations]
        fixed = resizer_config.WhichOneof("image_resizer_oneof") == "fixed_shape_resizer"
        self.grayscale = grayscale and set(names) <= CHANNELWISE_AUGMENTATIONS and not (
            fixed and resizer_config.fixed_shape_resizer.convert_to_grayscale)
        self.resize_first = fixed  # the model's resize to the same size is the identity
        self.retain_original = retain_original
        self.include_source_id = reader.include_source_id
        # flips and crops decided before decoding (see tfod.train.augment)
        self.window_first = (self.grayscale and fixed and not self.load_masks
                             and not retain_original and augment.supported(names))

    def __call__(self, serialized):
        import tensorflow as tf
        from object_detection.core import standard_fields as fields
        from object_detection.utils import ops as util_ops

        parsed = self.parse(serialized)
        encoded = parsed.pop("encoded")
        source_id = parsed.pop("source_id")
        groundtruth = util_ops.filter_unrecognized_classes(
            util_ops.filter_groundtruth_with_nan_box_coordinates(parsed))
        if self.window_first:
            image, spatial_shape, groundtruth = self.decode_augmented(encoded, groundtruth)
            original = None
        else:
            image, spatial_shape, groundtruth, original = self.decode_then_augment(
                encoded, groundtruth)
        image, true_shape, groundtruth = self.preprocess(image, groundtruth)
        features = {fields.InputDataFields.image: image,
                    HASH_KEY: _hash(source_id),
                    fields.InputDataFields.true_image_shape: true_shape,
                    fields.InputDataFields.original_image_spatial_shape: spatial_shape}
        if self.include_source_id:
            features[fields.InputDataFields.source_id] = source_id
        if original is not None:
            features[fields.InputDataFields.original_image] = tf.cast(original, tf.uint8)
        return self.pad(features, self.labels(groundtruth))

    def parse(self, serialized) -> dict:
        """The encoded image, source id, boxes, classes, weights (1) and, with
        ``load_instance_masks``, the masks' PNGs (decoded after the boxes are filtered)."""
        import tensorflow as tf
        from object_detection.core import standard_fields as fields

        spec = {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
                records.SOURCE_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
                records.CLASS_LABEL_KEY: tf.io.VarLenFeature(tf.int64),
                **{key: tf.io.VarLenFeature(tf.float32) for key in records.BOX_KEYS}}
        if self.load_masks:
            spec[records.MASK_KEY] = tf.io.VarLenFeature(tf.string)
        parsed = tf.io.parse_single_example(serialized, spec)
        dense = {key: tf.sparse.to_dense(value) for key, value in parsed.items()
                 if isinstance(value, tf.SparseTensor)}
        boxes = tf.stack([dense[key] for key in records.BOX_KEYS], axis=1)
        parsed = {"encoded": parsed[records.IMAGE_KEY],
                  "source_id": parsed[records.SOURCE_ID_KEY],
                  fields.InputDataFields.groundtruth_boxes: boxes,
                  fields.InputDataFields.groundtruth_classes: dense[records.CLASS_LABEL_KEY],
                  fields.InputDataFields.groundtruth_weights: tf.ones_like(boxes[:, 0])}
        if self.load_masks:
            parsed[fields.InputDataFields.groundtruth_instance_masks] = dense[records.MASK_KEY]
        return parsed

    def decode(self, encoded):
        """The image (uint8, one or three channels)."""
        import tensorflow as tf

        image = tf.io.decode_image(encoded, channels=0 if self.grayscale else 3,
                                   expand_animations=False)
        return self.checked_channels(image)

    def checked_channels(self, image):
        import tensorflow as tf

        if self.grayscale:
            tf.debugging.assert_equal(tf.shape(image)[2], 1, message=(
                "tfod: a colour image among grayscale records (the first image of the records "
                "decides); convert them all alike"))
        return tf.ensure_shape(image, [None, None, 1 if self.grayscale else 3])

    def decode_then_augment(self, encoded, groundtruth: dict):
        """The whole image decoded, then augmented by ``core.preprocessor``: the float image,
        the decoded ``[height, width]``, ``groundtruth`` (masks decoded) and, with
        ``retain_original``, the original image at the model's size (else None)."""
        import tensorflow as tf
        from object_detection.core import standard_fields as fields

        image = self.decode(encoded)
        spatial_shape = tf.shape(image)[:2]
        masks_key = fields.InputDataFields.groundtruth_instance_masks
        if masks_key in groundtruth:
            groundtruth[masks_key] = _decode_masks(groundtruth[masks_key], spatial_shape)
        original = (self.to_model_channels(self.resize(image)[0]) if self.retain_original
                    else None)
        image, groundtruth = self.augment(image, groundtruth)
        return image, spatial_shape, groundtruth, original

    def decode_augmented(self, encoded, groundtruth: dict):
        """The float window of the image that the flips and crops keep (a JPEG's alone
        decoded), mirrored if flipped, with brightness and contrast changed; the image's
        ``[height, width]``; ``groundtruth`` in the window's frame (see :mod:`.augment`)."""
        import tensorflow as tf

        size = tf.cond(tf.io.is_jpeg(encoded), lambda: tf.io.extract_jpeg_shape(encoded)[:2],
                       lambda: tf.shape(self.decode(encoded))[:2])
        window, groundtruth = augment.sample_window(self.augmentations, size, groundtruth)
        image = self.checked_channels(augment.decode_window(encoded, window, self.decode))
        image = augment.mirrored(image, window.flipped)
        return augment.adjust_pixels(self.augmentations, image), size, groundtruth

    def augment(self, image, groundtruth: dict):
        """The config's augmentations (``core.preprocessor``) on the float image and ground
        truth."""
        import tensorflow as tf
        from object_detection.core import preprocessor
        from object_detection.core import standard_fields as fields

        image = tf.cast(image, tf.float32)
        if not self.augmentations:
            return image, groundtruth
        masks = fields.InputDataFields.groundtruth_instance_masks in groundtruth
        tensors = preprocessor.preprocess(
            {fields.InputDataFields.image: image[tf.newaxis], **groundtruth}, self.augmentations,
            func_arg_map=preprocessor.get_default_func_arg_map(include_instance_masks=masks))
        image = tensors.pop(fields.InputDataFields.image)[0]
        return image, tensors

    def preprocess(self, image, groundtruth: dict):
        """``model.preprocess`` of the image, and boxes in the frame of its padded output."""
        import tensorflow as tf
        from object_detection.core import box_list, box_list_ops
        from object_detection.core import standard_fields as fields

        masks_key = fields.InputDataFields.groundtruth_instance_masks
        if masks_key in groundtruth:
            resized, groundtruth[masks_key], _ = self.resize(image, groundtruth[masks_key])
        else:
            resized = self.resize(image)[0] if self.resize_first else None
        if self.resize_first:
            image = resized
        image, true_shape = self.model.preprocess(self.to_model_channels(image)[tf.newaxis])
        padded = tf.cast(tf.shape(image)[1:3], tf.float32)
        true = tf.cast(true_shape[0, :2], tf.float32)
        frame = tf.concat([[0.0, 0.0], padded / true], axis=0)
        boxes_key = fields.InputDataFields.groundtruth_boxes
        boxes = box_list_ops.change_coordinate_frame(
            box_list.BoxList(groundtruth[boxes_key]), frame).get()
        tf.debugging.assert_greater_equal(boxes[:, 2:], boxes[:, :2], message=(
            "tfod: a ground-truth box with ymax < ymin or xmax < xmin"))
        groundtruth[boxes_key] = boxes
        return image[0], true_shape[0], groundtruth

    def to_model_channels(self, image):
        """A one-channel image repeated to the three the models take."""
        import tensorflow as tf

        return tf.tile(image, [1, 1, 3]) if self.grayscale else image

    def labels(self, groundtruth: dict) -> dict:
        """The label fields ``inputs.train_input`` gives for our records: one-hot classes (and
        the same as confidences), weights, and the crowd, area, difficult and group-of
        fields our records leave empty (zeros)."""
        import tensorflow as tf
        from object_detection.core import standard_fields as fields

        fields = fields.InputDataFields
        boxes = groundtruth[fields.groundtruth_boxes]
        count = tf.shape(boxes)[0]
        classes = tf.one_hot(groundtruth[fields.groundtruth_classes] - LABEL_OFFSET,
                             self.num_classes)
        labels = {
            fields.num_groundtruth_boxes: count,
            fields.groundtruth_boxes: boxes,
            fields.groundtruth_classes: classes,
            fields.groundtruth_weights: groundtruth[fields.groundtruth_weights],
            fields.groundtruth_confidences: classes,
            fields.groundtruth_area: tf.zeros([count], tf.float32),
            fields.groundtruth_is_crowd: tf.zeros([count], tf.bool),
            fields.groundtruth_difficult: tf.zeros([count], tf.int32),
            fields.groundtruth_group_of: tf.zeros([count], tf.bool),
        }
        if fields.groundtruth_instance_masks in groundtruth:
            labels[fields.groundtruth_instance_masks] = groundtruth[
                fields.groundtruth_instance_masks]
            labels[fields.groundtruth_instance_mask_weights] = tf.ones([count], tf.float32)
        return labels

    def pad(self, features: dict, labels: dict):
        """Every per-box field padded (or clipped) to ``max_number_of_boxes`` and images to
        the resizer's size, so that examples batch; the box count clipped alike."""
        import tensorflow as tf
        from object_detection.core import standard_fields as fields
        from object_detection.utils import shape_utils

        fields = fields.InputDataFields
        height, width = self.spatial_shape
        for key in (fields.image, fields.original_image):
            if key in features:
                features[key] = shape_utils.pad_or_clip_nd(features[key], [height, width, 3])
        shapes = {fields.groundtruth_boxes: [4], fields.groundtruth_classes: [self.num_classes],
                  fields.groundtruth_confidences: [self.num_classes],
                  fields.groundtruth_instance_masks: [height, width]}
        for key, value in labels.items():
            if key == fields.num_groundtruth_boxes:
                labels[key] = tf.minimum(value, self.max_boxes)
            else:
                labels[key] = shape_utils.pad_or_clip_nd(
                    value, [self.max_boxes, *shapes.get(key, [])])
        return features, labels


def _decode_masks(pngs, height_width):
    """PNG instance masks -> ``[masks, height, width]`` float32, 1 where the PNG is > 0."""
    import tensorflow as tf

    def decode():
        return tf.map_fn(lambda png: tf.cast(tf.io.decode_png(png, channels=1)[:, :, 0] > 0,
                                             tf.float32), pngs, fn_output_signature=tf.float32)

    return tf.cond(tf.size(pngs) > 0, decode,
                   lambda: tf.zeros(tf.concat([[0], height_width], axis=0)))


def _hash(source_id):
    """The evaluator's image key: ``source_id`` hashed into :data:`HASH_BINS` (an empty id
    gets a random number's, as in the OD API)."""
    import tensorflow as tf

    random_id = tf.strings.as_string(tf.random.uniform([], maxval=2**63 - 1, dtype=tf.int64))
    source_id = tf.where(tf.equal(source_id, ""), random_id, source_id)
    return tf.cast(tf.strings.to_hash_bucket_fast(source_id, HASH_BINS), tf.int32)
