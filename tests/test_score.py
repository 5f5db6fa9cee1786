"""The competition metric: hand-worked cases, the reference, the full official labels."""
import numpy as np
import pytest
import reference_metric as reference
from conftest import LABELS_CSV
from hypothesis import given, settings
from hypothesis import strategies as st

from tfod import detections as det
from tfod.boxes import scale_xywh
from tfod.detections import BoxTable, ImageBoxes
from tfod.scoring import analysis
from tfod.scoring import metric as score

BOX = [100, 100, 200, 300]


def truth(*boxes) -> ImageBoxes:
    return ImageBoxes.ground_truth(np.reshape(boxes, (-1, 4)))


def predicted(*pairs) -> ImageBoxes:
    """``predicted((box, score), ...)``."""
    return ImageBoxes([box for box, _ in pairs], [s for _, s in pairs])


def one_image(gt: ImageBoxes, pred: ImageBoxes, **kwargs) -> float:
    return score.competition_score({"a": gt}, {"a": pred}, **kwargs)


def test_thresholds_are_the_exact_decimals():
    assert score.THRESHOLDS.tolist() == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]


def test_perfect_predictions_score_one():
    gt = truth(BOX, [500, 500, 100, 100])
    assert one_image(gt, predicted((BOX, 0.9), ([500, 500, 100, 100], 0.3))) == 1.0


def test_no_prediction_on_a_positive_image_scores_zero():
    assert one_image(truth(BOX), ImageBoxes.empty()) == 0.0
    assert score.competition_score({"a": truth(BOX)}, {}) == 0.0


def test_false_positive_on_a_negative_image_scores_zero_and_counts():
    ground_truth = {"pos": truth(BOX), "neg": ImageBoxes.empty()}
    perfect = {"pos": predicted((BOX, 0.9))}
    assert score.competition_score(ground_truth, perfect) == 1.0
    with_fp = {**perfect, "neg": predicted((BOX, 0.2))}
    assert score.competition_score(ground_truth, with_fp) == 0.5
    assert score.competition_score(ground_truth, with_fp, min_score=0.5) == 1.0


def test_negative_image_without_prediction_is_left_out():
    ground_truth = {"pos": truth(BOX), "neg1": ImageBoxes.empty(), "neg2": ImageBoxes.empty()}
    assert score.competition_score(ground_truth, {"pos": predicted((BOX, 0.9))}) == 1.0
    matching = score.match(ground_truth, {"pos": predicted((BOX, 0.9))})
    assert np.isnan(matching.image_scores()[1:]).all()
    assert np.isnan(score.competition_score({"neg": ImageBoxes.empty()}, {}))


@pytest.mark.parametrize("k", range(8, 16))
def test_iou_of_exactly_a_threshold_is_no_hit(k):
    """A 20 x 1 truth and a k x 1 prediction inside it: IoU k/20, exactly the threshold k/20."""
    gt, pred = truth([0, 0, 20, 1]), predicted(([0, 0, k, 1], 0.5))
    hits_below = k - 8  # thresholds 0.40 .. (k-1)/20 are below k/20
    assert one_image(gt, pred) == pytest.approx(hits_below / 8, abs=1e-15)
    matching = score.match({"a": gt}, {"a": pred})
    assert matching.hits[0, :, 0].tolist() == [t < k / 20 for t in score.THRESHOLDS]
    assert not matching.hits[0, k - 8, 0]


def test_iou_of_exactly_one_half_with_real_sized_boxes():
    gt, pred = truth([264, 152, 213, 380]), predicted(([264, 152, 213, 190], 0.9))
    assert one_image(gt, pred) == pytest.approx(2 / 8)  # hits at 0.40, 0.45 only


def test_two_predictions_on_one_box_give_one_tp_and_one_fp():
    gt = truth(BOX)
    pred = predicted((BOX, 0.9), ([101, 101, 200, 300], 0.8))
    assert one_image(gt, pred) == 0.5
    tp, fp, fn = score.match({"a": gt}, {"a": pred}).counts()
    assert (tp == 1).all() and (fp == 1).all() and (fn == 0).all()


def test_higher_score_takes_the_box_first():
    """A loose high-score box takes the truth at low thresholds, leaving the tight one an FP."""
    gt = truth([0, 0, 100, 100])
    loose, tight = [0, 0, 100, 200], [0, 0, 100, 100]  # IoU 0.5 and 1
    first_loose = one_image(gt, predicted((loose, 0.9), (tight, 0.8)))
    first_tight = one_image(gt, predicted((loose, 0.8), (tight, 0.9)))
    # loose first: hits at 0.40, 0.45 (tp 1, fp 1: 1/2); at t >= 0.5 tight hits (also 1/2)
    assert first_loose == 0.5
    assert first_tight == 0.5 and first_tight == first_loose
    # two truths A (top) and B (below); loose covers both (IoU 0.5 each), tight is A
    two_truths = truth([0, 0, 100, 100], [0, 100, 100, 100])
    loose_takes_a = one_image(two_truths, predicted((loose, 0.9), (tight, 0.8)))
    assert loose_takes_a == pytest.approx(1 / 3)  # tp 1, fp 1, fn 1 at every threshold
    tight_takes_a = one_image(two_truths, predicted((loose, 0.8), (tight, 0.9)))
    assert tight_takes_a == pytest.approx((2 * 1.0 + 6 * (1 / 3)) / 8)  # loose then gets B


def test_order_of_predictions_matters_only_through_scores():
    gt = truth(BOX, [500, 500, 100, 100], [520, 520, 100, 100])
    boxes = [BOX, [510, 505, 100, 110], [505, 510, 95, 100], [90, 110, 210, 290], [0, 0, 5, 5]]
    scores = [0.9, 0.7, 0.8, 0.6, 0.95]
    expected = one_image(gt, ImageBoxes(boxes, scores))
    for permutation in np.random.default_rng(0).permutation([list(range(5))] * 6, axis=1):
        shuffled = ImageBoxes(np.array(boxes)[permutation], np.array(scores)[permutation])
        assert one_image(gt, shuffled) == expected


def test_predictions_for_unknown_images_are_an_error():
    with pytest.raises(ValueError, match="no ground truth"):
        score.competition_score({"a": truth(BOX)}, {"b": predicted((BOX, 0.5))})


def test_min_score_keeps_scores_at_least_the_threshold():
    gt = truth(BOX)
    pred = predicted((BOX, 0.5), ([700, 700, 10, 10], 0.49))
    assert one_image(gt, pred, min_score=0.5) == 1.0
    assert one_image(gt, pred, min_score=0.49) == 0.5
    assert one_image(gt, pred, min_score=0.51) == 0.0


# --- against the reference --------------------------------------------------------------

coordinate = st.integers(0, 60)
size = st.integers(0, 40)
boxes = st.lists(st.tuples(coordinate, coordinate, size, size), max_size=5)
scores = st.sampled_from([0.05, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0])  # ties included
images = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.tuples(boxes, st.lists(st.tuples(coordinate, coordinate, size, size, scores), max_size=6)),
    max_size=6,
)
# Heavily overlapping boxes: several predictions compete for several true boxes, so the
# matching cannot be decided box by box and the greedy loop runs.
near, similar = st.integers(0, 5), st.integers(8, 13)
dense_images = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.tuples(st.lists(st.tuples(near, near, similar, similar), min_size=2, max_size=4),
              st.lists(st.tuples(near, near, similar, similar, scores), min_size=2, max_size=6)),
    min_size=1, max_size=4,
)


def _split(data):
    ground_truth, predictions = {}, {}
    for key, (gt_boxes, pred_rows) in data.items():
        ground_truth[key] = truth(*gt_boxes) if gt_boxes else ImageBoxes.empty()
        if pred_rows:
            predictions[key] = ImageBoxes([row[:4] for row in pred_rows], [r[4] for r in pred_rows])
    return ground_truth, predictions


def _as_lists(table):
    return {key: (image.boxes.tolist(), image.scores.tolist()) for key, image in table.items()}


def _reference(ground_truth, predictions, min_score=0.0):
    return reference.dataset_score(_as_lists(ground_truth), _as_lists(predictions), min_score)


def _same(fast, slow):
    assert (np.isnan(fast) and np.isnan(slow)) or fast == pytest.approx(slow, rel=1e-12, abs=1e-15)


@settings(max_examples=300, deadline=None)
@given(images)
def test_matches_reference(data):
    ground_truth, predictions = _split(data)
    _same(score.competition_score(ground_truth, predictions), _reference(ground_truth, predictions))


@settings(max_examples=300, deadline=None)
@given(dense_images, st.sampled_from([0.0, 0.5]))
def test_dense_overlaps_match_reference(data, min_score):
    ground_truth, predictions = _split(data)
    _same(score.competition_score(ground_truth, predictions, min_score),
          _reference(ground_truth, predictions, min_score))


@settings(max_examples=100, deadline=None)
@given(images, st.lists(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.6, 0.9, 1.0]), min_size=1))
def test_sweep_matches_reference(data, min_scores):
    ground_truth, predictions = _split(data)
    curve = score.score_curve(ground_truth, predictions, min_scores)
    for min_score, value in zip(min_scores, curve, strict=True):
        _same(value, _reference(ground_truth, predictions, min_score))


@settings(max_examples=100, deadline=None)
@given(images, st.sampled_from([0.7, 0.8, 0.93, 1.1]))
def test_box_scale_matches_reference(data, factor):
    ground_truth, predictions = _split(data)
    scaled = {k: ImageBoxes(scale_xywh(v.boxes, factor), v.scores) for k, v in predictions.items()}
    _same(score.competition_score(ground_truth, predictions, box_scale=factor),
          _reference(ground_truth, scaled))


@settings(max_examples=100, deadline=None)
@given(images)
def test_per_image_scores_and_counts_match_reference(data):
    ground_truth, predictions = _split(data)
    matching = score.match(ground_truth, predictions)
    tp, fp, fn = matching.counts()
    lists, pred_lists = _as_lists(ground_truth), _as_lists(predictions)
    for i, key in enumerate(ground_truth):
        pred_boxes, pred_scores = pred_lists.get(key, ([], []))
        expected = reference.image_score(lists[key][0], pred_boxes, pred_scores)
        got = matching.image_scores()[i]
        assert (expected is None and np.isnan(got)) or got == pytest.approx(expected, rel=1e-12)
        assert (tp[i] + fp[i] == len(pred_boxes)).all()
        assert (tp[i] + fn[i] == len(lists[key][0])).all()


@settings(max_examples=200, deadline=None)
@given(dense_images, st.sampled_from([0.0, 0.3, 0.5, 0.9]), st.sampled_from([0.9, 1.0, 1.1]))
def test_one_score_agrees_with_the_matching(data, min_score, factor):
    """The direct path of ``competition_score`` against the full matching and the reference."""
    ground_truth, predictions = _split(data)
    direct = score.competition_score(ground_truth, predictions, min_score, box_scale=factor)
    _same(direct, score.match(ground_truth, predictions, box_scale=factor).score(min_score))
    scaled = {k: ImageBoxes(scale_xywh(v.boxes, factor), v.scores) for k, v in predictions.items()}
    _same(direct, _reference(ground_truth, scaled if factor != 1.0 else predictions, min_score))


def test_nan_predictions_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        one_image(truth(BOX), predicted(([np.nan, 0, 10, 10], 0.5)))
    with pytest.raises(ValueError, match="NaN"):
        one_image(truth(BOX), predicted((BOX, np.nan)))


# --- the full official labels -----------------------------------------------------------

@pytest.fixture(scope="module")
def labels() -> BoxTable:
    return det.read_labels(LABELS_CSV)


def test_labels_as_predictions_score_exactly_one(labels):
    assert score.competition_score(labels, labels) == 1.0
    as_dict = {key: ImageBoxes(image.boxes, np.full(len(image), 0.5))
               for key, image in labels.items()}
    assert score.competition_score(labels, as_dict) == 1.0


def test_labels_shrunk_to_80_percent_score_what_the_reference_gives(labels):
    shrunk = BoxTable(labels.ids, labels.image, scale_xywh(labels.boxes, 0.8), labels.scores)
    fast = score.competition_score(labels, shrunk)
    assert fast == pytest.approx(_reference(labels, shrunk), rel=1e-12)
    assert fast == pytest.approx(5 / 8)  # IoU 0.64: hits at 0.40 .. 0.60


def _noisy(labels: BoxTable, rng) -> BoxTable:
    """Jittered, duplicated and false boxes with random scores for each image of ``labels``."""
    jittered = labels.boxes + rng.normal(0, 0.1, labels.boxes.shape) * labels.boxes[:, [2, 3, 2, 3]]
    false_image = rng.integers(0, len(labels.ids), 3 * len(labels.ids))
    false_boxes = np.column_stack([rng.uniform(0, 800, (len(false_image), 2)),
                                   rng.uniform(50, 400, (len(false_image), 2))])
    image = np.concatenate([labels.image, labels.image, false_image])
    boxes = np.concatenate([jittered, scale_xywh(jittered, 1.3), false_boxes])
    return BoxTable(labels.ids, image, boxes, rng.random(len(image)))


@pytest.mark.parametrize("min_score", [0.0, 0.5])
def test_noisy_predictions_on_real_labels_score_what_the_reference_gives(labels, min_score):
    some = labels.subset(labels.ids[:3000])
    noisy = _noisy(some, np.random.default_rng(0))
    _same(score.competition_score(some, noisy, min_score), _reference(some, noisy, min_score))


@pytest.mark.parametrize(("enlargement", "expected"), [(1.25, 0.92), (1.5, 0.76)])
def test_box_scale_fit_undoes_a_systematic_enlargement(labels, enlargement, expected):
    """Scale s restores IoU > 0.75 when s * enlargement is in (0.866, 1.155); of that plateau
    of perfect scores the fit takes the scale closest to 1."""
    some = labels.subset(labels.ids[:3000])
    enlarged = BoxTable(some.ids, some.image, scale_xywh(some.boxes, enlargement), some.scores)
    fit = score.fit_box_scale(score.pack(some, enlarged))
    assert fit.scale == expected and fit.score == 1.0
    perfect = score.BOX_SCALES[fit.scores == 1.0]
    assert perfect.max() == expected and (perfect * enlargement > 0.866).all()
    assert fit.scores[score.BOX_SCALES == 1.0][0] < 1.0


def test_error_analysis_measures_ratios_and_offsets(labels):
    some = labels.subset(labels.ids[:3000])
    moved = some.boxes * [1, 1, 1.1, 0.95] + [5, -3, 0, 0]
    matching = score.match(some, BoxTable(some.ids, some.image, moved, some.scores))
    errors = analysis.error_analysis(matching, min_score=0.5)
    assert errors["pairs"] == det.count_boxes(some)
    assert errors["width_ratio"]["median"] == pytest.approx(1.1)
    assert errors["height_ratio"]["median"] == pytest.approx(0.95)
    assert errors["width_ratio"]["iqr"] == pytest.approx(0, abs=1e-9)
    assert errors["centre_dx"]["median"] == pytest.approx(5 + 0.05 * np.median(some.boxes[:, 2]),
                                                          rel=0.2)


def test_best_threshold_prefers_the_lowest_among_equals():
    assert score.best_threshold([0.1, 0.2, 0.3], [0.5, 0.7, 0.7]) == (0.2, 0.7)
    threshold, value = score.best_threshold([0.1, 0.2], [np.nan, np.nan])
    assert threshold == 0.1 and np.isnan(value)
