"""The one place that knows box formats; every conversion in tfod goes through here.

Three formats meet in this project, all as float arrays of shape ``(..., 4)``:

* ``xywh``  -- pixels of the original image, top-left corner plus size: ``x, y, width,
  height``. The official labels, detections and submission CSVs use it.
* ``yxyx``  -- normalized to [0, 1]: ``ymin, xmin, ymax, xmax``. The OD API's records,
  tensors and exported models use it.
* ``xyxy``  -- normalized to [0, 1]: ``x1, y1, x2, y2``. The ensemble-boxes library uses it.

Outside models (Darknet, other CSVs) also give pixel corners ``x1, y1, x2, y2``
(:func:`from_corners`) and pixel centre plus size ``cx, cy, w, h`` (:func:`from_centres`).
Functions taking ``width`` and ``height`` accept arrays too (one size per box, broadcast), so
boxes of many images of different sizes convert in one call.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _as_boxes(boxes) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(array.shape[:-1] + (4,) if array.ndim >= 2 else (0, 4))
    if array.shape[-1] != 4:
        raise ValueError(f"boxes must have 4 coordinates in the last axis, got shape {array.shape}")
    return array


def xywh_to_yxyx(boxes, width: float, height: float) -> np.ndarray:
    """Pixel ``x, y, w, h`` -> normalized ``ymin, xmin, ymax, xmax``."""
    b = _as_boxes(boxes)
    x, y, w, h = np.moveaxis(b, -1, 0)
    return np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=-1)


def yxyx_to_xywh(boxes, width: float, height: float) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` -> pixel ``x, y, w, h``."""
    b = _as_boxes(boxes)
    ymin, xmin, ymax, xmax = np.moveaxis(b, -1, 0)
    return np.stack(
        [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height], axis=-1
    )


def yxyx_to_xyxy(boxes) -> np.ndarray:
    """Normalized OD API ``ymin, xmin, ymax, xmax`` -> ensemble-boxes ``x1, y1, x2, y2``."""
    return _as_boxes(boxes)[..., [1, 0, 3, 2]]


def xyxy_to_yxyx(boxes) -> np.ndarray:
    """Ensemble-boxes ``x1, y1, x2, y2`` -> normalized OD API ``ymin, xmin, ymax, xmax``."""
    return _as_boxes(boxes)[..., [1, 0, 3, 2]]


def hflip_yxyx(boxes) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` boxes of a horizontally flipped image -> the same
    boxes in the unflipped image (the flip is its own inverse)."""
    b = _as_boxes(boxes)
    return np.stack([b[..., 0], 1 - b[..., 3], b[..., 2], 1 - b[..., 1]], axis=-1)


def xywh_to_xyxy(boxes, width: float, height: float) -> np.ndarray:
    """Pixel ``x, y, w, h`` -> normalized ensemble-boxes ``x1, y1, x2, y2``."""
    return yxyx_to_xyxy(xywh_to_yxyx(boxes, width, height))


def xyxy_to_xywh(boxes, width: float, height: float) -> np.ndarray:
    """Normalized ensemble-boxes ``x1, y1, x2, y2`` -> pixel ``x, y, w, h``."""
    return yxyx_to_xywh(xyxy_to_yxyx(boxes), width, height)


def corners(boxes_xywh) -> np.ndarray:
    """Pixel ``x, y, w, h`` -> pixel corners ``x1, y1, x2, y2``."""
    b = _as_boxes(boxes_xywh)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def from_corners(boxes_xyxy) -> np.ndarray:
    """Pixel corners ``x1, y1, x2, y2`` -> pixel ``x, y, w, h``."""
    b = _as_boxes(boxes_xyxy)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def from_centres(boxes_cxcywh) -> np.ndarray:
    """Pixel centre and size ``cx, cy, w, h`` -> pixel ``x, y, w, h``."""
    b = _as_boxes(boxes_cxcywh)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., 2:]], axis=-1)


def to_pixels(boxes, width, height) -> np.ndarray:
    """Normalized boxes whose coordinates go ``x, y, x, y`` (``xywh``, corners ``x1, y1, x2,
    y2`` or ``cx, cy, w, h``) -> the same format in pixels of a ``width`` x ``height`` image."""
    b = _as_boxes(boxes)
    return b * np.stack([width, height, width, height], axis=-1)


def clip_unit(boxes) -> np.ndarray:
    """Normalized boxes (any corner order) clipped to [0, 1], as ensemble-boxes expects."""
    return np.clip(_as_boxes(boxes), 0.0, 1.0)


def scale_xywh(boxes, factor: float) -> np.ndarray:
    """Scale pixel ``x, y, w, h`` boxes about their centres by ``factor``."""
    b = _as_boxes(boxes)
    centre = b[..., :2] + b[..., 2:] / 2
    size = b[..., 2:] * factor
    return np.concatenate([centre - size / 2, size], axis=-1)


def resize_xywh(boxes, scale_x: float, scale_y: float) -> np.ndarray:
    """Pixel ``x, y, w, h`` boxes of an image resized by ``scale_x``, ``scale_y``."""
    return _as_boxes(boxes) * np.array([scale_x, scale_y, scale_x, scale_y])


class Clipped(NamedTuple):
    """Result of :func:`clip_xywh`: the clipped boxes and what happened to each input box."""

    boxes: np.ndarray  # the boxes kept, clipped to the image
    clipped: np.ndarray  # bool per input box: partly outside, so clipped
    outside: np.ndarray  # bool per input box: wholly outside (or empty after clipping), dropped


def clip_xywh(boxes, width: float, height: float) -> Clipped:
    """Clip pixel ``x, y, w, h`` boxes to a ``width`` x ``height`` image."""
    xyxy = corners(boxes)
    limits = np.array([width, height, width, height], dtype=np.float64)
    inside = np.clip(xyxy, 0, limits)
    outside = (inside[:, 2] <= inside[:, 0]) | (inside[:, 3] <= inside[:, 1])
    clipped = ~outside & np.any(inside != xyxy, axis=1)
    return Clipped(from_corners(inside[~outside]), clipped, outside)


class CornerColumns(NamedTuple):
    """Pixel corners and areas as separate arrays of one shape, for IoU of chosen pairs."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    area: np.ndarray  # from the corners: (x2 - x1) * (y2 - y1)

    def take(self, index) -> CornerColumns:
        """The boxes at ``index`` (any numpy index) of each column."""
        return CornerColumns(*(column[index] for column in self))


def corner_columns(boxes_xywh) -> CornerColumns:
    """Pixel ``x, y, w, h`` boxes (..., 4) -> :class:`CornerColumns` of shape (...)."""
    x1, y1, w, h = np.moveaxis(_as_boxes(boxes_xywh), -1, 0)
    x2, y2 = x1 + w, y1 + h
    return CornerColumns(x1, y1, x2, y2, (x2 - x1) * (y2 - y1))


def paired_iou(a: CornerColumns, b: CornerColumns) -> np.ndarray:
    """IoU of box ``a[k]`` with box ``b[k]`` (shapes broadcast); 0 where the union is empty.

    The float operations of :func:`pairwise_iou_xywh`, which uses it.
    """
    iw = np.clip(np.minimum(a.x2, b.x2) - np.maximum(a.x1, b.x1), 0, None)
    ih = np.clip(np.minimum(a.y2, b.y2) - np.maximum(a.y1, b.y1), 0, None)
    intersection = iw * ih
    union = a.area + b.area - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def pairwise_iou_xywh(a, b) -> np.ndarray:
    """IoU of every box in ``a`` (..., N, 4) with every box in ``b`` (..., M, 4): (..., N, M).

    Leading dimensions broadcast, so padded batches of images are compared at once.
    Boxes of zero area have IoU 0 with everything.
    """
    return paired_iou(corner_columns(a).take((..., slice(None), None)),
                      corner_columns(b).take((..., None, slice(None))))


def yxyx_to_pixel_rects(boxes, width: int, height: int) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` -> integer pixel rectangles ``top, left, bottom,
    right`` of a ``width`` x ``height`` image, bottom and right exclusive (numpy slices).

    Rounding: a pixel belongs to a box when its centre lies in the box's ``[min, max)`` range
    in pixels, so ``start = ceil(min * size - 0.5)`` and ``stop = ceil(max * size - 0.5)``;
    a box with integer pixel edges maps to exactly those pixels. A box thinner than a pixel
    (no centre inside) gets the one pixel that holds its middle. Rectangles are clipped to
    the image and hold at least one pixel in each direction.
    """
    b = _as_boxes(boxes)
    sizes = np.array([height, width], dtype=np.float64)
    low, high = b[..., :2] * sizes, b[..., 2:] * sizes
    start, stop = np.ceil(low - 0.5), np.ceil(high - 0.5)
    thin = stop <= start
    start = np.where(thin, np.floor((low + high) / 2), start)
    stop = np.where(thin, start + 1, stop)
    limits = sizes.astype(np.int64)
    start = np.clip(start.astype(np.int64), 0, limits - 1)
    stop = np.clip(stop.astype(np.int64), start + 1, limits)
    return np.concatenate([start, stop], axis=-1)
