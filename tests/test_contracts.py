"""Each new stage's contract pinned at its edges (issue 20, item 10), with values where a one-line
edit of the code changes the result: exact thresholds (a value exactly at one, and the float just
below it), the given and the fitted scores each checked against a direct computation
(:func:`tfod.scoring.metric.competition_score`, which shares no matching code with the search),
several classes, and checks that hold with the optional ones switched off.
"""
import numpy as np
import pytest
from conftest import LABELS_CSV
from dicom_files import resized_dicom, write_frame
from noisy_models import noisy_model
from pydicom.encaps import generate_frames

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.data import dicom
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.infer import ensemble, fit, outside, sizes
from tfod.infer.ensemble import FusionParams
from tfod.scoring import metric
from tfod.train import cv


def below(value: float) -> float:
    """The largest float below ``value``."""
    return float(np.nextafter(value, -np.inf))


@pytest.fixture(scope="module")
def truth() -> BoxTable:
    """600 labelled images of the official file."""
    labels = det.read_labels(LABELS_CSV)
    return labels.subset(labels.ids[:600])


def oversized(model: BoxTable, factor: float) -> BoxTable:
    """``model`` with every box scaled about its centre by ``factor``."""
    return BoxTable(model.ids, model.image, box_ops.scale_xywh(model.boxes, factor), model.scores)


def direct_score(truth, fused, threshold: float, box_scale: float) -> float:
    """The competition score of what a submission at ``threshold``/``box_scale`` would hold."""
    return metric.competition_score(truth, ensemble.for_submission(fused, threshold, box_scale))


# --- the ensemble's fit ------------------------------------------------------------------------


def test_fit_given_and_fitted_scores_each_match_a_direct_computation(truth):
    models = [oversized(noisy_model(truth, seed, quality), 1.3)
              for seed, quality in ((31, 0.9), (32, 0.4))]  # boxes too large: scale < 1 wins
    given = FusionParams(iou_thr=0.7, weights=(3.0, 1.0))  # far from what the fit picks
    folds = {image_id: k % 3 for k, image_id in enumerate(truth.ids)}
    probabilities = {image_id: (k % 7) / 6 for k, image_id in enumerate(truth.ids)}

    def gate(fused):
        return ensemble.gate(fused, probabilities, "multiply")

    result = fit.fit(models, ["a", "b"], truth, None, given, threshold=0.3, box_scale=0.85,
                     folds=folds, transform=gate)
    as_given = gate(ensemble.fuse(models, None, given))
    assert result.given.score == pytest.approx(direct_score(truth, as_given, 0.3, 0.85), abs=1e-9)
    assert (result.given.threshold, result.given.box_scale) == (0.3, 0.85)
    fitted = result.fitted
    assert fitted.box_scale < 1.0
    fused = gate(ensemble.fuse(models, None, fitted.params))
    assert fitted.score == pytest.approx(
        direct_score(truth, fused, fitted.threshold, fitted.box_scale), abs=1e-9)
    assert fitted.score > result.given.score + 0.01  # the two differ: neither can stand in
    for k in range(3):
        ids = [i for i in truth.ids if folds[i] == k]
        assert result.per_fold[k] == pytest.approx(direct_score(
            truth.subset(ids), fused.subset(ids), fitted.threshold, fitted.box_scale), abs=1e-9)
    for name, model in zip(("a", "b"), models, strict=True):
        single = result.singles[name]
        assert single["given"].score == pytest.approx(direct_score(truth, model, 0.3, 0.85),
                                                      abs=1e-9)
        assert single["fitted"].score == pytest.approx(direct_score(
            truth, model, single["fitted"].threshold, single["fitted"].box_scale), abs=1e-9)
        assert single["fitted"].score >= max(direct_score(truth, model, t, s) for t in (
            0.2, 0.4, 0.6) for s in (0.8, 0.9, 1.0)) - 1e-9


# --- gating and the submission's threshold -----------------------------------------------------


def test_threshold_gate_keeps_a_probability_exactly_at_the_threshold_and_drops_just_below():
    detections = BoxTable.of({
        "at": ImageBoxes([[10, 10, 50, 50], [100, 100, 40, 40]], [0.9, 0.2]),
        "below": ImageBoxes([[10, 10, 50, 50]], [0.8]),
        "above": ImageBoxes([[10, 10, 50, 50]], [0.7]),
        "empty": ImageBoxes.empty()})
    probabilities = {"at": 0.3, "below": below(0.3), "above": 0.31, "empty": 0.0}
    gated = ensemble.gate(detections, probabilities, "threshold", threshold=0.3)
    assert gated.ids == detections.ids  # every image stays, maybe without boxes
    assert [len(gated[i]) for i in gated.ids] == [2, 0, 1, 0]
    np.testing.assert_array_equal(gated["at"].scores, [0.9, 0.2])  # scores untouched
    multiplied = ensemble.gate(detections, probabilities, "multiply")
    np.testing.assert_array_equal(multiplied["at"].scores, [0.9 * 0.3, 0.2 * 0.3])
    np.testing.assert_array_equal(multiplied["below"].scores, [0.8 * below(0.3)])
    np.testing.assert_array_equal(multiplied["at"].boxes, detections["at"].boxes)


def test_submission_keeps_a_score_exactly_at_the_threshold_and_scales_about_the_centre():
    detections = BoxTable.of({"a": ImageBoxes([[100, 200, 40, 60], [0, 0, 10, 10]],
                                              [0.5, below(0.5)]),
                              "b": ImageBoxes([[10, 20, 30, 40]], [1.0])})
    chosen = ensemble.for_submission(detections, 0.5, box_scale=0.5)
    assert chosen.ids == ["a", "b"] and [len(chosen[i]) for i in chosen.ids] == [1, 1]
    np.testing.assert_allclose(chosen["a"].boxes, [[110, 215, 20, 30]])
    np.testing.assert_allclose(chosen["b"].boxes, [[17.5, 30, 15, 20]])


# --- a campaign's out-of-fold score ------------------------------------------------------------


def test_each_folds_score_is_taken_at_the_one_out_of_fold_threshold(truth):
    good, poor = noisy_model(truth, 41, 1.0), noisy_model(truth, 42, 0.2)
    half = len(truth.ids) // 2
    ids = {0: truth.ids[:half], 1: truth.ids[half:]}
    oof = {**{i: good[i] for i in ids[0]}, **{i: poor[i] for i in ids[1]}}
    # each fold's own best threshold, as the evaluator would record it
    own = {k: metric.best_threshold(metric.MIN_SCORES, metric.score_curve(
        truth.subset(ids[k]), {i: oof[i] for i in ids[k]}))[0] for k in ids}
    folds = [{"run": f"m-fold{k}", "fold": k, "score": 0.5, "threshold": own[k],
              "ids": list(ids[k])} for k in ids]
    labels = det.read_labels(LABELS_CSV)  # more labelled images than the folds hold
    summary = cv.score_oof(labels.subset(labels.ids[:900]), oof, folds)
    curve = [metric.competition_score(truth, oof, min_score=t) for t in metric.MIN_SCORES]
    threshold = summary["oof"]["threshold"]
    assert summary["oof"]["score"] == pytest.approx(max(curve), abs=1e-9)
    assert metric.competition_score(truth, oof, min_score=threshold) == pytest.approx(
        max(curve), abs=1e-9)
    differ = 0
    for fold in summary["folds"]:
        k = fold["fold"]
        fold_truth, fold_oof = truth.subset(ids[k]), {i: oof[i] for i in ids[k]}
        at_oof = metric.competition_score(fold_truth, fold_oof, min_score=threshold)
        assert fold["score_at_oof_threshold"] == pytest.approx(at_oof, abs=1e-9)
        assert fold["images"] == len(ids[k]) and fold["threshold"] == own[k]
        differ += abs(metric.competition_score(fold_truth, fold_oof, min_score=own[k])
                      - at_oof) > 1e-6
    assert differ  # a fold's own threshold gives another score: the two cannot be confused


# --- convert's passthrough with the frame check switched off -----------------------------------


def test_a_frame_without_end_of_image_marker_is_refused_even_unverified(sample_dicoms, tmp_path):
    frame = next(generate_frames(dicom.read_dataset(sample_dicoms[0]).PixelData,
                                 number_of_frames=1))
    cut = write_frame(sample_dicoms[0], tmp_path / "cut.dcm", frame[:len(frame) // 2])
    for verify in (True, False):
        with pytest.raises(dicom.DicomError, match="cut short"):
            dicom.prepare_image(cut, verify_frames=verify)
    whole = write_frame(sample_dicoms[0], tmp_path / "whole.dcm", frame)
    assert dicom.prepare_image(whole, verify_frames=False).encoded == frame


# --- readers at their bounds -------------------------------------------------------------------


def test_probabilities_at_zero_and_one_are_accepted_and_just_outside_refused(tmp_path):
    csv = tmp_path / "classifier.csv"
    csv.write_text("patientId,probability\na,0.0\nb,1.0\nc,1\n")
    assert outside.read_probabilities(csv) == {"a": 0.0, "b": 1.0, "c": 1.0}
    for value, line in (("1.0000001", 3), ("-0.0000001", 3)):
        csv.write_text(f"patientId,probability\na,0.5\nb,{value}\n")
        with pytest.raises(BadInput, match=f"classifier.csv, row {line}: probability"):
            outside.read_probabilities(csv)


def test_a_mapped_csv_row_with_only_some_box_fields_is_an_error_naming_its_line(tmp_path):
    csv = tmp_path / "theirs.csv"
    csv.write_text("id,conf,left,top,w,h\na,0.9,1,2,30,40\nb,,,,,\nc,0.5,1,2,,40\n")
    columns = {"patientId": "id", "score": "conf", "x": "left", "y": "top", "width": "w",
               "height": "h"}
    with pytest.raises(BadInput, match=r"theirs.csv, row 4: width '' is not a number"):
        outside.read_mapped_csv(csv, columns)
    csv.write_text("id,conf,left,top,w,h\na,0.9,1,2,30,40\nb,,,,,\n")
    read = outside.read_mapped_csv(csv, columns)
    assert read.ids == ["a", "b"] and len(read["b"]) == 0
    np.testing.assert_array_equal(read["a"].boxes, [[1, 2, 30, 40]])


def test_image_sizes_of_dicoms_are_width_then_height(sample_dicoms, tmp_path):

    folder = tmp_path / "dicoms"
    folder.mkdir()
    resized_dicom(sample_dicoms[0], 600, 400, folder / "wide.dcm")
    resized_dicom(sample_dicoms[1], 300, 500, folder / "tall.dcm")
    found, skipped = sizes.sizes_of_inputs(str(folder))
    assert found == {"wide": (600, 400), "tall": (300, 500)} and skipped == []


def test_classifier_metrics_with_one_class_give_no_auc_but_f1():
    from tfod.classify.evaluate import classification_metrics

    metrics = classification_metrics(np.ones(4, int), np.array([0.9, 0.2, 0.6, 0.6]))
    assert np.isnan(metrics["roc_auc"]) and metrics["positives"] == metrics["images"] == 4
    assert metrics["f1"] == pytest.approx(1.0) and metrics["threshold"] == 0.2
    metrics = classification_metrics([0, 1, 1, 0], [0.1, 0.8, 0.7, 0.7])
    assert metrics["roc_auc"] == pytest.approx(0.875)
    assert metrics["f1"] == pytest.approx(0.8) and metrics["threshold"] == 0.7


class FixedScores:
    """A detector with the ExportedModel interface that finds the same two boxes in every image,
    one scoring exactly ``score`` and one the float just below it."""

    input_size = None

    def __init__(self, score: float):
        self.score = score

    def resize(self, image):
        return np.broadcast_to(np.asarray(image, np.float32)[..., None], image.shape[:2] + (3,))

    def __call__(self, images):
        boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 0.9, 0.7]])
        return [boxes] * len(images), [np.array([self.score, below(self.score)])] * len(images)


def test_predict_keeps_a_score_exactly_at_min_score_and_the_submission_at_its_threshold(
        sample_dicoms, tmp_path):

    from tfod.infer import predict as infer

    folder = tmp_path / "dicoms"
    folder.mkdir()
    resized_dicom(sample_dicoms[0], 600, 400, folder / "wide.dcm")
    detections, _ = infer.predict(FixedScores(0.25), folder, min_score=0.25, progress=False)
    np.testing.assert_array_equal(detections["wide"].scores, [0.25])
    np.testing.assert_allclose(detections["wide"].boxes, [[120, 40, 240, 160]])  # x y w h px
    everything, _ = infer.predict(FixedScores(0.25), folder, progress=False)
    output, submission = tmp_path / "detections.csv", tmp_path / "submission.csv"
    infer.write_predictions(everything, [], output, submission, threshold=0.25)
    assert len(det.read_detections(output)["wide"]) == 2
    submitted = det.read_submission(submission)["wide"]
    np.testing.assert_array_equal(submitted.scores, [0.25])
    np.testing.assert_allclose(submitted.boxes, [[120, 40, 240, 160]])


@pytest.mark.parametrize("method", ["nmw", "wbf", "nms"])
def test_unequal_weights_reach_the_library_divided_by_the_largest(method):
    """``nmw`` multiplies scores by the weights: divided by the largest they stay in [0, 1]."""
    import ensemble_boxes

    first = BoxTable.of({"a": ImageBoxes([[100, 100, 200, 300], [700, 500, 100, 100]],
                                         [0.8, 0.3])})
    second = BoxTable.of({"a": ImageBoxes([[120, 90, 210, 280], [690, 520, 110, 90]],
                                          [0.6, 0.5])})
    fused = ensemble.fuse([first, second], None, FusionParams(method, (1.0, 3.0), 0.5))["a"]
    library = {"nmw": ensemble_boxes.non_maximum_weighted, "wbf":
               ensemble_boxes.weighted_boxes_fusion, "nms": ensemble_boxes.nms}[method]
    normalized = [box_ops.xywh_to_xyxy(m["a"].boxes, 1024, 1024) for m in (first, second)]
    _, scores, _ = library(normalized, [first["a"].scores, second["a"].scores],
                           [np.zeros(2), np.zeros(2)], weights=[1 / 3, 1.0], iou_thr=0.5)
    np.testing.assert_allclose(np.sort(fused.scores), np.sort(scores), rtol=1e-12)
    assert fused.scores.max() <= 1.0
