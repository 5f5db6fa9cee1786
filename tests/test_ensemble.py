"""The ensemble stage: fusion through ensemble-boxes in each image's own frame, the fit, outside
models, gating, the submission, and the tfod-ensemble tool.

Synthetic detectors come from the official labels (``noisy_models``, fixed seeds); the
``--models`` test runs two tiny exported models over the 16 real sample DICOMs.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import ensemble_boxes
import numpy as np
import pytest
from conftest import LABELS_CSV, RSNA, SAMPLE_DICOMS, one_line_error
from noisy_models import noisy_model

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.infer import ensemble, fit, outside, sizes
from tfod.infer.ensemble import FusionParams
from tfod.scoring import metric

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SAMPLE_SUBMISSION = RSNA / "stage_2_sample_submission.csv"
WIDE = "wide-600x400"  # a non-square image: 600 wide, 400 high
SIZES = {"a": (1024, 1024), "b": (1024, 1024), WIDE: (600, 400)}


def table(rows: dict) -> BoxTable:
    """``{id: [(x, y, w, h, score), ...]}`` as detections."""
    return BoxTable.of({i: ImageBoxes(np.reshape([r[:4] for r in boxes], (-1, 4)),
                                      [r[4] for r in boxes]) for i, boxes in rows.items()})


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.ensemble", "--noprogress", *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def labels() -> BoxTable:
    return det.read_labels(LABELS_CSV)


@pytest.fixture(scope="module")
def validation(labels) -> BoxTable:
    """1,500 labelled images (the first ones of the official file)."""
    return labels.subset(labels.ids[:1500])


# --- fusion ----------------------------------------------------------------------------------


def test_a_model_fused_with_itself_keeps_its_boxes():
    model = table({"a": [(100, 200, 150, 300, 0.9), (600, 100, 200, 250, 0.4)],
                   "b": [], WIDE: [(450, 300, 140, 90, 0.7)]})
    for method in ("wbf", "avg", "nmw", "nms"):
        fused = ensemble.fuse([model, model], SIZES, FusionParams(method=method))
        assert fused.ids == model.ids
        for i in model.ids:
            order = np.argsort(-fused[i].scores)
            # some of the library's paths compute in float32: 1e-7 of the image size
            np.testing.assert_allclose(fused[i].boxes[order], model[i].boxes, atol=1e-3)
            np.testing.assert_allclose(fused[i].scores[order], model[i].scores, atol=1e-6)
    assert len(fused["b"]) == 0  # an image without boxes stays, empty


@pytest.mark.parametrize("weights", [None, (2.0, 1.0)])
def test_two_models_give_exactly_what_the_library_returns(weights):
    first = table({"a": [(100, 100, 200, 300, 0.8), (700, 500, 100, 100, 0.3)]})
    second = table({"a": [(120, 90, 210, 280, 0.6), (690, 520, 110, 90, 0.5)]})
    params = FusionParams(weights=weights, iou_thr=0.5)
    fused = ensemble.fuse([first, second], SIZES, params)["a"]
    normalized = [box_ops.xywh_to_xyxy(m["a"].boxes, 1024, 1024) for m in (first, second)]
    boxes, scores, _ = ensemble_boxes.weighted_boxes_fusion(
        normalized, [first["a"].scores, second["a"].scores], [np.zeros(2), np.zeros(2)],
        weights=weights, iou_thr=0.5)
    assert len(fused) == len(scores) == 2
    np.testing.assert_allclose(fused.scores, scores, rtol=1e-12, atol=0)
    np.testing.assert_allclose(fused.boxes, box_ops.xyxy_to_xywh(boxes, 1024, 1024),
                               rtol=1e-12, atol=1e-9)
    if weights is None:  # the same arithmetic: bit for bit
        np.testing.assert_array_equal(fused.scores, scores)


def _direct_library_call(method, boxes, scores, labels, weights):
    """What each --method must compute, written out call by call."""
    if method in ("wbf", "avg"):
        return ensemble_boxes.weighted_boxes_fusion(boxes, scores, labels, weights=weights,
                                                    iou_thr=0.5, conf_type="avg")
    return {"nmw": ensemble_boxes.non_maximum_weighted,
            "nms": ensemble_boxes.nms}.get(method, ensemble_boxes.soft_nms)(
        boxes, scores, labels, weights=weights, iou_thr=0.5)


@pytest.mark.parametrize("method", ["wbf", "avg", "nmw", "nms", "soft_nms"])
def test_each_method_is_its_own_library_call(method):
    first = table({"a": [(100, 100, 200, 300, 0.8), (700, 500, 100, 100, 0.3),
                         (110, 95, 190, 310, 0.45)]})
    second = table({"a": [(120, 90, 210, 280, 0.6), (690, 520, 110, 90, 0.5)]})
    assert method in ensemble.METHODS
    fused = ensemble.fuse([first, second], SIZES,
                          FusionParams(method=method, weights=(2.0, 1.0), iou_thr=0.5))["a"]
    boxes, scores, _ = _direct_library_call(
        method, [box_ops.xywh_to_xyxy(m["a"].boxes, 1024, 1024) for m in (first, second)],
        [first["a"].scores, second["a"].scores], [np.zeros(3), np.zeros(2)],
        np.array([1.0, 0.5]))
    order, expected = np.argsort(-fused.scores), np.argsort(-np.asarray(scores))
    np.testing.assert_allclose(fused.scores[order], np.asarray(scores)[expected], atol=1e-6)
    np.testing.assert_allclose(fused.boxes[order],
                               box_ops.xyxy_to_xywh(np.asarray(boxes)[expected], 1024, 1024),
                               atol=1e-3)


def test_fusion_with_the_progress_bar_on_equals_the_library_image_by_image(validation):
    # 1,500 images take seconds: the bar redraws at the end (tqdm's update() then returns True,
    # which once replaced the results and crashed every real-sized fusion).
    models = [noisy_model(validation, seed) for seed in (1, 2)]
    fused = ensemble.fuse(models, None, progress=True)
    assert fused.ids == validation.ids
    for i in validation.ids:
        if not any(len(model[i]) for model in models):
            assert len(fused[i]) == 0
            continue
        boxes, scores, _ = ensemble_boxes.weighted_boxes_fusion(
            [box_ops.xywh_to_xyxy(model[i].boxes, 1024, 1024) for model in models],
            [model[i].scores for model in models], [np.zeros(len(model[i])) for model in models],
            iou_thr=0.55)
        np.testing.assert_allclose(fused[i].scores, scores, rtol=1e-12, atol=0)
        np.testing.assert_allclose(fused[i].boxes, box_ops.xyxy_to_xywh(boxes, 1024, 1024),
                                   rtol=1e-12, atol=1e-9)


def test_boxes_come_back_in_each_images_own_pixel_frame():
    # Near the right edge of a 600 x 400 image: dividing x by 400 would push it past 1 (clipped).
    first = table({WIDE: [(450, 300, 140, 90, 0.8)], "a": [(900, 100, 100, 100, 0.8)]})
    second = table({WIDE: [(460, 306, 130, 84, 0.8)], "a": [(910, 110, 100, 100, 0.8)]})
    fused = ensemble.fuse([first, second], SIZES, FusionParams(iou_thr=0.5))
    np.testing.assert_allclose(fused[WIDE].boxes, [[455, 303, 135, 87]], atol=1e-3)
    np.testing.assert_allclose(fused["a"].boxes, [[905, 105, 100, 100]], atol=1e-3)
    swapped = {**SIZES, WIDE: (400, 600)}
    wrong = ensemble.fuse([first, second], swapped, FusionParams(iou_thr=0.5))[WIDE]
    assert wrong.boxes.shape != (1, 4) or not np.allclose(wrong.boxes, [[455, 303, 135, 87]],
                                                           atol=1.0)


def test_missing_sizes_and_bad_parameters_are_bad_input():
    model = table({WIDE: [(450, 300, 140, 90, 0.8)]})
    with pytest.raises(BadInput, match="no size"):
        ensemble.fuse([model], {"a": (1024, 1024)})
    for params, message in ((FusionParams(weights=(1, 2)), "2 weights for 1 models"),
                            (FusionParams(method="vote"), "--method"),
                            (FusionParams(method="avg", conf_type="max"), "conf_type"),
                            (FusionParams(weights=(0,)), "positive")):
        with pytest.raises(BadInput, match=message):
            ensemble.fuse([model], SIZES, params)


# --- fit -------------------------------------------------------------------------------------


def test_fitted_weights_favour_the_better_model(validation):
    good, poor = noisy_model(validation, 11, quality=1.0), noisy_model(validation, 12, quality=0.2)
    result = fit.fit([poor, good], ["poor", "good"], validation, None, FusionParams())
    weights = result.fitted.params.weights
    assert weights[1] > weights[0], result.trace
    assert result.singles["good"]["fitted"].score > result.singles["poor"]["fitted"].score


def test_fitted_ensemble_beats_the_best_single_model(validation):
    models = [noisy_model(validation, seed, quality) for seed, quality in
              ((21, 0.9), (22, 0.7), (23, 0.5))]
    result = fit.fit(models, ["m1", "m2", "m3"], validation, None, FusionParams(),
                     folds={i: k % 2 for k, i in enumerate(validation.ids)})
    best_single = max(runs["fitted"].score for runs in result.singles.values())
    assert result.fitted.score > best_single + 0.01, fit.format_summary(result)
    # equal weights, each model at 0.5, 2, 3 (one at a time), then 4 other IoU thresholds
    assert 1 + 4 <= result.fusions == len(result.trace) <= 1 + 3 * 3 + 4
    as_dict = result.as_dict()
    assert as_dict["given"]["params"]["weights"] == [1.0, 1.0, 1.0]
    assert as_dict["fitted"]["score"] == pytest.approx(
        metric.match(validation, ensemble.fuse(models, None, result.fitted.params),
                     result.fitted.box_scale).score(result.fitted.threshold))
    assert set(as_dict["fitted_per_fold"]) == {"0", "1"}


# --- outside models, gating, submission ------------------------------------------------------


def test_darknet_and_mapped_csv_readers(tmp_path):
    darknet = tmp_path / "comp4_det_test_opacity.txt"
    darknet.write_text("a 0.9 101 201 251 501\n\nb 0.5 11 21 111 121\n")
    read = outside.read_darknet(darknet)
    assert read.ids == ["a", "b"]
    np.testing.assert_allclose(read["a"].boxes, [[100, 200, 150, 300]])
    mapped = tmp_path / "other.csv"
    mapped.write_text("image,conf,cx,cy,w,h\na,0.9,0.5,0.5,0.25,0.5\nb,,,,,\n")
    read = outside.read_mapped_csv(mapped, outside.parse_columns("patientId=image,score=conf,"
                                                                 "width=w,height=h"),
                                   "cxcywh", normalized=True, sizes={"a": (800, 400), "b": (1, 1)})
    np.testing.assert_allclose(read["a"].boxes, [[300, 100, 200, 200]])
    assert len(read["b"]) == 0
    darknet.write_text("a 0.9 101 201 251 501\nb 0.5 11 21 111\n")
    with pytest.raises(BadInput, match="row 2: 5 fields") as error:
        outside.read_darknet(darknet)
    assert str(darknet) in str(error.value)
    mapped.write_text("image,conf,cx,cy,w,h\na,high,0.5,0.5,0.25,0.5\n")
    with pytest.raises(BadInput, match="row 2: score 'high' is not a number"):
        outside.read_mapped_csv(mapped, {"patientId": "image", "score": "conf", "width": "w",
                                         "height": "h"}, "cxcywh")


def test_image_sizes_from_dicoms_and_from_a_sizes_csv(tmp_path):
    from_dicoms, skipped = sizes.sizes_of_inputs(str(SAMPLE_DICOMS))
    assert len(from_dicoms) == 16 and set(from_dicoms.values()) == {(1024, 1024)}
    assert skipped == []
    csv = tmp_path / "sizes.csv"
    csv.write_text(f"patientId,width,height\n{WIDE},600,400\nb,1024,wide\n")
    with pytest.raises(BadInput, match="row 3: width '1024' and height 'wide'"):
        sizes.read_image_sizes(csv)
    csv.write_text(f"patientId,width,height\n{WIDE},600,400\n")
    assert sizes.read_image_sizes(csv) == {WIDE: (600, 400)}


def test_gating_multiplies_or_drops_and_names_missing_images():
    model = table({"a": [(100, 100, 200, 200, 0.8)], "b": [(10, 10, 50, 50, 0.6)]})
    probabilities = {"a": 0.5, "b": 0.2}
    multiplied = ensemble.gate(model, probabilities, "multiply")
    np.testing.assert_allclose([multiplied["a"].scores[0], multiplied["b"].scores[0]],
                               [0.4, 0.12])
    dropped = ensemble.gate(model, probabilities, "threshold", 0.3)
    assert dropped.ids == ["a", "b"] and len(dropped["a"]) == 1 and len(dropped["b"]) == 0
    with pytest.raises(BadInput, match=r"1 image\(s\) have no classifier probability.*'b'"):
        ensemble.gate(model, {"a": 0.9}, "multiply")


def test_submission_covers_exactly_the_test_ids_and_reads_back(tmp_path):
    test_ids = det.read_patient_ids(SAMPLE_SUBMISSION)
    assert len(test_ids) == 3000
    rng = np.random.default_rng(5)
    detections = {i: ImageBoxes(rng.uniform(100, 400, (2, 4)), rng.uniform(0, 1, 2))
                  for i in test_ids}
    path = ensemble.submit(detections, tmp_path / "submission.csv", test_ids,
                                     threshold=0.5, box_scale=0.9)
    read = det.read_submission(path)
    assert read.ids == test_ids
    expected = ensemble.for_submission(detections, 0.5, 0.9)
    assert len(read.scores) == len(expected.scores) == np.count_nonzero(
        np.concatenate([d.scores for d in detections.values()]) >= 0.5)
    np.testing.assert_allclose(read.max_scores(), expected.max_scores())
    del detections[test_ids[7]]
    with pytest.raises(BadInput, match="1 test id"):
        ensemble.submit(detections, tmp_path / "other.csv", test_ids, 0.5)
    assert list(tmp_path.iterdir()) == [path]  # nothing half-written left behind


# --- the tool --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_kinds(tmp_path_factory, validation):
    """One model's detections as an OD API detections CSV, a Darknet file and a mapped CSV."""
    folder = tmp_path_factory.mktemp("kinds")
    ids = validation.ids[:300]
    truth = validation.subset(ids)
    det.write_detections(noisy_model(truth, 31, 0.9), folder / "od_api.csv")
    darknet_model = noisy_model(truth, 32, 0.8)
    corners = box_ops.corners(darknet_model.boxes) + outside.DARKNET_OFFSET
    # repr of a Python float: the shortest text that reads back exactly (numpy 2's repr of
    # its own scalars is 'np.float64(...)').
    lines = [f"{darknet_model.ids[i]} {float(s)!r} {' '.join(repr(float(v)) for v in c)}"
             for i, s, c in
             zip(darknet_model.image, darknet_model.scores, corners, strict=True)]
    (folder / "yolo.txt").write_text("\n".join(lines) + "\n")
    mapped_model = noisy_model(truth, 33, 0.7)
    rows = ["id,left,top,right,bottom,conf"] + [
        f"{mapped_model.ids[i]},{','.join(repr(float(v)) for v in (*c, s))}" for i, s, c in
        zip(mapped_model.image, mapped_model.scores, box_ops.corners(mapped_model.boxes),
            strict=True)] + [f"{i},,,,," for i in ids if not len(mapped_model[i])]
    (folder / "mapped.csv").write_text("\n".join(rows) + "\n")
    return folder, truth, [noisy_model(truth, 31, 0.9), darknet_model, mapped_model]


def kinds_args(folder: Path) -> list[str]:
    return [f"--detections={folder / 'od_api.csv'}", f"--outside=darknet:{folder / 'yolo.txt'}",
            f"--outside=csv:{folder / 'mapped.csv'}", "--box_format=xyxy",
            "--columns=patientId=id,x1=left,y1=top,x2=right,y2=bottom,score=conf"]


def test_tool_fuses_an_od_api_csv_a_darknet_file_and_a_mapped_csv(three_kinds, tmp_path):
    folder, truth, models = three_kinds
    done = run_tool(*kinds_args(folder), "--weights=2,1,1", "--iou_thr=0.5",
                    f"--output={tmp_path / 'fused.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1024 x 1024" in done.stdout  # the note: no sizes given
    fused = det.read_detections(tmp_path / "fused.csv")
    assert fused.ids == truth.ids  # every image, those without boxes as an empty row
    expected = ensemble.fuse(models, None, FusionParams(weights=(2, 1, 1), iou_thr=0.5))
    np.testing.assert_allclose(fused.boxes, expected.boxes, atol=1e-6)
    np.testing.assert_allclose(fused.scores, expected.scores, atol=1e-9)


def test_tool_fits_then_reapplies_and_submits(three_kinds, tmp_path):
    folder, truth, _ = three_kinds
    fit_dir = tmp_path / "fit"
    done = run_tool(*kinds_args(folder), "--fit", f"--labels_csv={LABELS_CSV}",
                    f"--fit_dir={fit_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    fitted = json.loads((fit_dir / "ensemble.json").read_text())
    assert (fit_dir / "threshold_curves.png").stat().st_size > 1000
    assert fitted["fusions"] == len(fitted["search"]) > 1
    assert fitted["fitted"]["score"] >= max(s["fitted"]["score"]
                                            for s in fitted["single_models"].values())
    assert "at given threshold" in done.stdout and "fitted" in done.stdout
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text("patientId\n" + "\n".join(truth.ids) + "\n")
    done = run_tool(*kinds_args(folder), f"--params={fit_dir / 'ensemble.json'}",
                    f"--submission={tmp_path / 'sub.csv'}", f"--test_ids={ids_csv}")
    assert done.returncode == 0, done.stderr[-3000:]
    submitted = det.read_submission(tmp_path / "sub.csv")
    assert submitted.ids == truth.ids
    score = metric.competition_score(truth, submitted)
    assert score == pytest.approx(fitted["fitted"]["score"], abs=1e-9)


def test_tool_gates_with_a_classifier(three_kinds, tmp_path):
    folder, truth, _ = three_kinds
    classifier = tmp_path / "classifier.csv"
    classifier.write_text("patientId,probability\n" + "".join(
        f"{i},{0.95 if len(truth[i]) else 0.05}\n" for i in truth.ids))
    scores = {}
    for name, gate in (("ungated", []), ("gated", [f"--classifier_csv={classifier}",
                                                   "--gate=threshold:0.5"])):
        done = run_tool(*kinds_args(folder), *gate, f"--output={tmp_path / name}.csv")
        assert done.returncode == 0, done.stderr[-3000:]
        scores[name] = metric.competition_score(truth, det.read_detections(
            tmp_path / f"{name}.csv"), 0.1)
    assert scores["gated"] > scores["ungated"]
    classifier.write_text("patientId,probability\n" + truth.ids[0] + ",0.5\n")
    error = one_line_error(run_tool(*kinds_args(folder), f"--classifier_csv={classifier}",
                                    "--gate=multiply"))
    assert "have no classifier probability" in error


def test_tool_bad_inputs_are_one_line_errors(three_kinds, tmp_path):
    folder, _, _ = three_kinds
    bad_darknet = tmp_path / "bad.txt"
    bad_darknet.write_text("a 0.9 1 2 3 4\na 1.5 1 2 3 4\n")
    cases = [
        (["--weights=1,2"], "2 weights for 3 models"),
        ([f"--outside=darknet:{bad_darknet}"], f"{bad_darknet}, row 2: score 1.5"),
        (["--outside=yolo:x.txt"], "is not KIND:PATH"),
        (["--fit"], "--fit needs --labels_csv"),
        ([f"--submission={tmp_path / 's.csv'}"], "--submission needs --test_ids"),
        (["--gate=multiply", f"--classifier_csv={tmp_path}"], "cannot read"),
        (["--gate=threshold:x", f"--classifier_csv={tmp_path}"], "'x' is not a number"),
        (["--gate=multiply"], "--gate needs --classifier_csv"),
    ]
    for extra, message in cases:
        args = kinds_args(folder) if "--outside" not in extra[0] else extra[:1] + [
            f"--detections={folder / 'od_api.csv'}"]
        args = args + [e for e in extra if not e.startswith("--outside")]
        assert message in one_line_error(run_tool(*args)), (extra, message)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.slow
def test_models_two_tiny_exported_models_over_the_real_dicoms(converted_sample, tmp_path):
    """``--models`` runs two exported models through the predict stage, then fuses them."""
    import tensorflow as tf

    import tfod.compat  # noqa: F401

    # isort: split
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    from tfod.config import pipeline as configs
    from tfod.infer import export, predict  # noqa: F401  (the predict stage must exist)
    from tfod.runfolder import RunFolder

    exported = []
    for k, size in enumerate((128, 160)):
        run = RunFolder(tmp_path / f"run{k}").create()
        configs.build_config("ssd_mobilenet_v2", converted_sample, 0, run.pipeline_config,
                             image_size=size, batch_size=2, num_steps=1)
        model_config = config_util.get_configs_from_pipeline_file(
            str(run.pipeline_config))["model"]
        tf.random.set_seed(k)
        model = model_builder.build(model_config, is_training=False)
        images, shapes = model.preprocess(tf.zeros([1, size, size, 3]))
        model.postprocess(model.predict(images, shapes), shapes)
        checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64))
        tf.train.CheckpointManager(checkpoint, str(run.root), 1).save()  # scratch weights
        export.export(run.root, "latest", tmp_path / f"exported{k}",  # scratch scores are low
                      ["model.ssd.post_processing.batch_non_max_suppression.score_threshold=0"])
        exported.append(tmp_path / f"exported{k}")
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text("patientId\n" + "\n".join(p.stem for p in SAMPLE_DICOMS.glob("*.dcm")))
    done = run_tool(*(f"--models={folder}" for folder in exported), f"--input={SAMPLE_DICOMS}",
                    f"--output={tmp_path / 'fused.csv'}", f"--submission={tmp_path / 's.csv'}",
                    f"--test_ids={ids_csv}", "--threshold=0.0")
    assert done.returncode == 0, done.stderr[-3000:]
    fused = det.read_detections(tmp_path / "fused.csv")
    assert sorted(fused.ids) == sorted(p.stem for p in SAMPLE_DICOMS.glob("*.dcm"))
    assert len(fused.scores) > 0
    corners = box_ops.corners(fused.boxes)
    assert corners.min() >= -1e-6 and corners.max() <= 1024 + 1e-6
    assert det.read_submission(tmp_path / "s.csv").ids == ids_csv.read_text().split()[1:]
