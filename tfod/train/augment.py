"""The config's flips and crops decided before decoding, so that only the window a record keeps
is decoded, and brightness and contrast run on that window alone.

For steps (as ``preprocessor_builder`` builds them) that :func:`supported` accepts,
:func:`sample_window`, :func:`decode_window`, :func:`mirrored` and :func:`adjust_pixels` give
the pixels and boxes that ``core.preprocessor.preprocess`` gives for the same random draws,
drawn from the same distributions:

* a crop window is drawn as ``core.preprocessor``'s crops draw it: the same
  ``sample_distorted_bounding_box`` on the same image shape and (clipped) boxes, the same
  ``random_coef`` draw, ``ssd_random_crop``'s uniform choice among its operations; boxes are
  pruned, moved into the window and clipped by the same ``box_list_ops``, and flipped by the
  same subtractions;
* flips and crops compose into one window of the record's image and one flip: cropping a
  flipped image is flipping the crop of the mirrored window (both only move pixels), and
  ``tf.io.decode_and_crop_jpeg`` gives the pixels that decoding then cropping gives;
* brightness and contrast are ``core.preprocessor``'s arithmetic on the flipped window, the
  very tensor they see there (the mirroring is done before them, since contrast's mean sums
  the pixels in their order). They do not commute with the model's resize (contrast subtracts
  the image's mean, both clip to [0, 255]), so they still run before it; nor does a flip, with
  the OD API's bilinear resize (``align_corners=False`` is not symmetric).

``tests/test_pipeline.py`` pins the draws of ``core.preprocessor`` (its ``PreprocessorCache``)
and finds the same pixels and boxes, bit for bit.
"""
from __future__ import annotations

import inspect
import sys
from typing import NamedTuple

import tfod.compat  # noqa: F401  (before object_detection)

GEOMETRIC = ("random_horizontal_flip", "random_crop_image", "ssd_random_crop")
PHOTOMETRIC = ("random_adjust_brightness", "random_adjust_contrast")
CROP_OPTIONS = ("min_object_covered", "aspect_ratio_range", "area_range", "overlap_thresh",
                "clip_boxes", "random_coef")


def supported(names: list[str]) -> bool:
    """Whether the steps ``names`` (in the config's order) are flips and crops, then
    brightness and contrast changes: contrast needs the final window's mean."""
    photometric = [name in PHOTOMETRIC for name in names]
    return (bool(names) and all(name in GEOMETRIC + PHOTOMETRIC for name in names)
            and photometric == sorted(photometric))


class Window(NamedTuple):
    """Where the augmented image lies in the record's image, and whether it is mirrored."""
    offset: object  # int32 [y, x]
    size: object  # int32 [height, width]
    flipped: object  # bool


def sample_window(steps, image_size, groundtruth: dict):
    """The window of an image of ``image_size`` (``[height, width]``) that the flips and crops
    among ``steps`` keep, and ``groundtruth`` (boxes, classes, weights) in its frame."""
    import tensorflow as tf
    from object_detection.core import preprocessor

    window = Window(tf.zeros([2], tf.int32), image_size, tf.constant(False))
    samplers = {preprocessor.random_horizontal_flip: _flip,
                preprocessor.random_crop_image: _random_crop,
                preprocessor.ssd_random_crop: _ssd_random_crop}
    for function, params in steps:
        if function in samplers:
            window, groundtruth = samplers[function](window, groundtruth, **params)
    return window, groundtruth


def adjust_pixels(steps, image):
    """The brightness and contrast steps among ``steps`` on the float ``image``, each with
    its draw as ``core.preprocessor`` draws it."""
    import tensorflow as tf
    from object_detection.core import preprocessor

    for function, params in steps:
        if function is preprocessor.random_adjust_brightness:
            delta = params["max_delta"]
            image = brightness(image, tf.random.uniform([], -delta, delta))
        elif function is preprocessor.random_adjust_contrast:
            image = contrast(image, tf.random.uniform([], params["min_delta"],
                                                      params["max_delta"]))
    return image


def brightness(image, delta):
    """``core.preprocessor.random_adjust_brightness``'s arithmetic with its draw ``delta``,
    without the slice and concatenation it does on an image of other than three channels
    (they copy the pixels, at great cost for one channel, and change none)."""
    import tensorflow as tf

    return tf.clip_by_value(tf.image.adjust_brightness(image / 255, delta) * 255, 0.0, 255.0)


def contrast(image, factor):
    """``core.preprocessor.random_adjust_contrast``'s arithmetic with its draw ``factor``
    (as for :func:`brightness`)."""
    import tensorflow as tf

    return tf.clip_by_value(tf.image.adjust_contrast(image / 255, factor) * 255, 0.0, 255.0)


def decode_window(encoded, window: Window, decode):
    """The pixels (uint8) of ``window`` of the image ``encoded``, not mirrored: a JPEG's window
    alone decoded, any other image decoded by ``decode`` and cropped."""
    import tensorflow as tf

    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_and_crop_jpeg(
            encoded, tf.concat([window.offset, window.size], 0), channels=0),
        lambda: tf.slice(decode(encoded), tf.concat([window.offset, [0]], 0),
                         tf.concat([window.size, [-1]], 0)))


def mirrored(image, flipped):
    """The one-channel ``image`` as float, mirrored if ``flipped``: reversing the columns of
    ``[height, width]`` is many times faster than of ``[height, width, 1]``."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    return tf.cond(flipped, lambda: tf.reverse(tf.squeeze(image, 2), [1])[:, :, tf.newaxis],
                   lambda: image)


def _fields():
    from object_detection.core import standard_fields as fields

    fields = fields.InputDataFields
    return fields.groundtruth_boxes, fields.groundtruth_classes, fields.groundtruth_weights


def _flip(window: Window, groundtruth: dict, probability, **_):
    """``random_horizontal_flip``: boxes mirrored with ``probability``."""
    import tensorflow as tf

    return flip_window(window, groundtruth, tf.random.uniform([]) < probability)


def flip_window(window: Window, groundtruth: dict, flip):
    """``window`` mirrored and ``groundtruth``'s boxes flipped if ``flip``, with
    ``core.preprocessor``'s arithmetic."""
    import tensorflow as tf

    boxes_key = _fields()[0]
    boxes = groundtruth[boxes_key]
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=1)
    flipped = tf.concat([ymin, tf.subtract(1.0, xmax), ymax, tf.subtract(1.0, xmin)], 1)
    return (window._replace(flipped=tf.not_equal(window.flipped, flip)),
            {**groundtruth, boxes_key: tf.where(flip, flipped, boxes)})


def _random_crop(window: Window, groundtruth: dict, min_object_covered, aspect_ratio_range,
                 area_range, overlap_thresh, clip_boxes, random_coef, **_):
    """``random_crop_image``: with probability ``1 - random_coef``, a window sampled on the
    current window's shape and boxes."""
    import tensorflow as tf

    def crop():
        begin, size, box = tf.image.sample_distorted_bounding_box(
            tf.concat([window.size, [1]], 0),
            tf.clip_by_value(groundtruth[_fields()[0]], 0.0, 1.0)[:, tf.newaxis],
            min_object_covered=min_object_covered, aspect_ratio_range=aspect_ratio_range,
            area_range=area_range, max_attempts=100, use_image_if_no_bounding_boxes=True)
        return crop_window(window, groundtruth, begin[:2], size[:2], tf.reshape(box, [4]),
                           overlap_thresh, clip_boxes)

    if random_coef < sys.float_info.min:
        return crop()
    return tf.cond(tf.random.uniform([]) > random_coef, crop, lambda: (window, groundtruth))


def _ssd_random_crop(window: Window, groundtruth: dict, **params):
    """``ssd_random_crop``: one of its operations (``random_crop_image`` options), chosen
    uniformly."""
    import tensorflow as tf
    from object_detection.core import preprocessor

    defaults = inspect.signature(preprocessor.ssd_random_crop).parameters
    options = {name: params.get(name, defaults[name].default) for name in CROP_OPTIONS}
    count = len(options["min_object_covered"])
    choice = tf.random.uniform([], maxval=count, dtype=tf.int32)
    return tf.switch_case(choice, [
        lambda index=index: _random_crop(window, groundtruth,
                                         **{name: value[index] for name, value in options.items()})
        for index in range(count)])


def crop_window(window: Window, groundtruth: dict, begin, size, box, overlap_thresh: float,
                clip_boxes: bool):
    """The part of ``window`` at ``begin`` of ``size`` pixels (``box`` normalized, in the
    frame the image is shown in), and the boxes that overlap it by ``overlap_thresh`` in its
    frame, as ``core.preprocessor``'s crops keep and move them."""
    import tensorflow as tf
    from object_detection.core import box_list, box_list_ops

    boxes_key, classes_key, weights_key = _fields()
    boxes = box_list.BoxList(groundtruth[boxes_key])
    boxes.add_field(classes_key, groundtruth[classes_key])
    boxes.add_field(weights_key, groundtruth[weights_key])
    boxes, _ = box_list_ops.prune_completely_outside_window(boxes, box)
    boxes, _ = box_list_ops.prune_non_overlapping_boxes(
        boxes, box_list.BoxList(box[tf.newaxis]), overlap_thresh)
    moved = box_list_ops.change_coordinate_frame(boxes, box).get()
    if clip_boxes:
        moved = tf.clip_by_value(moved, 0.0, 1.0)
    left = tf.where(window.flipped, window.size[1] - begin[1] - size[1], begin[1])
    cropped = Window(window.offset + tf.stack([begin[0], left]), size, window.flipped)
    return cropped, {boxes_key: moved, classes_key: boxes.get_field(classes_key),
                     weights_key: boxes.get_field(weights_key)}
