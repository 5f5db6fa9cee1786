"""tfod.boxes: the one module that converts between box formats."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfod import boxes

finite = st.floats(min_value=0, max_value=1000, allow_nan=False)
box = st.tuples(finite, finite, st.floats(0.5, 500), st.floats(0.5, 500))


def test_xywh_to_yxyx_normalizes_by_width_and_height():
    result = boxes.xywh_to_yxyx([[100, 200, 300, 400]], width=1000, height=800)
    np.testing.assert_allclose(result, [[0.25, 0.1, 0.75, 0.4]])


@given(st.lists(box, min_size=1, max_size=5), st.integers(64, 2048), st.integers(64, 2048))
def test_round_trips_through_every_format(xywh, width, height):
    xywh = np.array(xywh)
    yxyx = boxes.xywh_to_yxyx(xywh, width, height)
    np.testing.assert_allclose(boxes.yxyx_to_xywh(yxyx, width, height), xywh, atol=1e-6)
    xyxy = boxes.xywh_to_xyxy(xywh, width, height)
    np.testing.assert_allclose(boxes.xyxy_to_xywh(xyxy, width, height), xywh, atol=1e-6)
    np.testing.assert_allclose(boxes.xyxy_to_yxyx(boxes.yxyx_to_xyxy(yxyx)), yxyx)


def test_empty_boxes_keep_their_shape():
    assert boxes.xywh_to_yxyx(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    assert boxes.pairwise_iou_xywh(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)


def test_wrong_number_of_coordinates_is_an_error():
    with pytest.raises(ValueError, match="4 coordinates"):
        boxes.xywh_to_yxyx([[1, 2, 3]], 10, 10)


def test_clip_counts_partial_and_drops_outside_boxes():
    result = boxes.clip_xywh([[10, 10, 20, 20], [90, 90, 20, 20], [200, 5, 10, 10]], 100, 100)
    np.testing.assert_allclose(result.boxes, [[10, 10, 20, 20], [90, 90, 10, 10]])
    assert result.clipped.tolist() == [False, True, False]
    assert result.outside.tolist() == [False, False, True]


def test_scale_about_centre():
    np.testing.assert_allclose(boxes.scale_xywh([[10, 20, 100, 50]], 0.8), [[20, 25, 80, 40]])


def test_pairwise_iou_known_values_and_broadcasting():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    np.testing.assert_allclose(boxes.pairwise_iou_xywh(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    batched = boxes.pairwise_iou_xywh(np.stack([a, a]), np.stack([b, b]))
    assert batched.shape == (2, 1, 4)
