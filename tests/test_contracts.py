"""Each new stage's contract pinned at its edges (issue 20, item 10), with values where a one-line
edit of the code changes the result: exact thresholds (a value exactly at one, and the float just
below it), the given and the fitted scores each checked against a direct computation
(:func:`tfod.scoring.metric.competition_score`, which shares no matching code with the search),
several classes, and checks that hold with the optional ones switched off.
"""
import numpy as np
import pytest
from conftest import LABELS_CSV
from noisy_models import noisy_model
from pydicom.encaps import generate_frames
from test_dicom import write_frame

from tfod import detections as det
from tfod.data import dicom
from tfod.detections import BoxTable, ImageBoxes
from tfod.infer import ensemble, fit
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


def direct_score(truth, fused, threshold: float, box_scale: float) -> float:
    """The competition score of what a submission at ``threshold``/``box_scale`` would hold."""
    return metric.competition_score(truth, ensemble.for_submission(fused, threshold, box_scale))


# --- the ensemble's fit ------------------------------------------------------------------------


def test_fit_given_and_fitted_scores_each_match_a_direct_computation(truth):
    models = [noisy_model(truth, seed, quality) for seed, quality in ((31, 0.9), (32, 0.4))]
    given = FusionParams(iou_thr=0.7, weights=(3.0, 1.0))  # far from what the fit picks
    folds = {image_id: k % 3 for k, image_id in enumerate(truth.ids)}
    probabilities = {image_id: (k % 7) / 6 for k, image_id in enumerate(truth.ids)}

    def gate(fused):
        return ensemble.gate(fused, probabilities, "multiply")

    result = fit.fit(models, ["a", "b"], truth, None, given, threshold=0.3, box_scale=0.85,
                     folds=folds, transform=gate)
    as_given = gate(ensemble.fuse(models, None, given))
    assert result.given.score == pytest.approx(direct_score(truth, as_given, 0.3, 0.85), abs=1e-12)
    assert (result.given.threshold, result.given.box_scale) == (0.3, 0.85)
    fitted = result.fitted
    fused = gate(ensemble.fuse(models, None, fitted.params))
    assert fitted.score == pytest.approx(
        direct_score(truth, fused, fitted.threshold, fitted.box_scale), abs=1e-12)
    assert fitted.score > result.given.score + 0.01  # the two differ: neither can stand in
    for k in range(3):
        ids = [i for i in truth.ids if folds[i] == k]
        assert result.per_fold[k] == pytest.approx(direct_score(
            truth.subset(ids), fused.subset(ids), fitted.threshold, fitted.box_scale), abs=1e-12)
    for name, model in zip(("a", "b"), models, strict=True):
        single = result.singles[name]
        assert single["given"].score == pytest.approx(direct_score(truth, model, 0.3, 0.85),
                                                      abs=1e-12)
        assert single["fitted"].score == pytest.approx(direct_score(
            truth, model, single["fitted"].threshold, single["fitted"].box_scale), abs=1e-12)
        assert single["fitted"].score >= max(
            direct_score(truth, model, t, s) for t in (0.2, 0.4, 0.6) for s in (0.8, 0.9, 1.0))


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
    summary = cv.score_oof(truth, oof, folds)
    curve = [metric.competition_score(truth, oof, min_score=t) for t in metric.MIN_SCORES]
    threshold = float(metric.MIN_SCORES[int(np.nanargmax(curve))])
    assert summary["oof"]["threshold"] == threshold
    assert summary["oof"]["score"] == pytest.approx(max(curve), abs=1e-12)
    assert own[0] != threshold or own[1] != threshold  # the folds' own thresholds differ
    for fold in summary["folds"]:
        k = fold["fold"]
        at_oof = metric.competition_score(truth.subset(ids[k]), {i: oof[i] for i in ids[k]},
                                          min_score=threshold)
        assert fold["score_at_oof_threshold"] == pytest.approx(at_oof, abs=1e-12)
        assert fold["images"] == len(ids[k]) and fold["threshold"] == own[k]


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
