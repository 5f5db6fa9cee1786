"""tfod.classify and tfod-classify on the real sample: train, export, predict, evaluate, gate.

One module-scoped run serves the slow tests: ``mobilenetv2`` at 64 px, batch 4, 6 steps on
CPU, trained through the tool (a subprocess) on fold 1 and scored on fold 0 of the converted
sample. Its batch-norm momentum is 0 so that six steps give probabilities that differ between
images (with the backbone's own 0.999 every image gets nearly the same value, and comparisons
between prediction paths could not fail).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import CLASS_INFO_CSV, LABELS_CSV, REPO, SAMPLE_DICOMS
from sklearn.metrics import f1_score, roc_auc_score

from tfod import detections as det
from tfod.classify import data, predict
from tfod.classify.evaluate import METRICS_NAME, ROC_PLOT_NAME, best_f1, evaluate_run
from tfod.classify.model import Serving, build_classifier, load_saved_model
from tfod.classify.runpaths import best_weights, load_config, saved_model_path, val_probabilities
from tfod.classify.train import ClassifierConfig, train
from tfod.errors import BadInput
from tfod.runfolder import RunFolder, read_json, read_status
from tfod.scoring.metric import competition_score

IMAGE_SIZE, NUM_STEPS = 64, 6


def tool(*flags) -> list[str]:
    return [sys.executable, "-m", "tools.classify", *flags]


def run_tool(*flags) -> subprocess.CompletedProcess:
    return subprocess.run(tool(*flags), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=900)


def read_probabilities(path) -> dict[str, float]:
    """A ``patientId,probability`` CSV as written by tfod-classify (the ensemble stage owns the
    strict reader, tfod.infer.outside.read_probabilities)."""
    table = pd.read_csv(path, dtype={"patientId": str, "probability": float})
    assert list(table.columns) == ["patientId", "probability"]
    assert not table["patientId"].duplicated().any()
    return dict(zip(table["patientId"], table["probability"], strict=True))


def sample_ids() -> list[str]:
    return sorted(path.stem for path in SAMPLE_DICOMS.glob("*.dcm"))


def record_glob(converted) -> str:
    return str(converted / "fold*-*.tfrecord")


@pytest.fixture(scope="module")
def trained_run(converted_sample, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("classifier") / "mobilenetv2-fold0"
    done = run_tool("--mode=train", "--backbone=mobilenetv2", f"--data_dir={converted_sample}",
                    "--fold=0", f"--run_dir={run_dir}", f"--image_size={IMAGE_SIZE}",
                    f"--num_steps={NUM_STEPS}", "--batch_size=4", "--eval_every=3",
                    "--learning_rate=0.001", "--batchnorm_momentum=0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ROC AUC" in done.stdout
    return RunFolder(run_dir)


def eval_scalars(folder) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


@pytest.mark.slow
def test_train_writes_a_run_folder(trained_run, converted_sample):
    config = load_config(trained_run.root)
    assert (config["backbone"], config["image_size"], config["fold"]) == ("mobilenetv2", 64, 0)
    assert read_status(trained_run)["state"] == "finished"
    val_auc = eval_scalars(trained_run.eval_events)["classifier/auc"]
    assert sorted(val_auc) == [3, NUM_STEPS]
    assert "classifier/loss" in eval_scalars(trained_run.train_events)
    best = read_json(trained_run.best_checkpoint)
    assert best["step"] in val_auc and best["score"] == pytest.approx(max(val_auc.values()))
    assert best_weights(trained_run).with_suffix(".index").is_file()
    assert (saved_model_path(trained_run) / "saved_model.pb").is_file()
    assert "val_auc" in trained_run.train_log.read_text()
    metrics = json.loads((trained_run.metrics / METRICS_NAME).read_text())
    assert (trained_run.metrics / ROC_PLOT_NAME).stat().st_size > 1000
    fold0 = pd.read_csv(converted_sample / "folds.csv").query("fold == 0")
    probabilities = read_probabilities(val_probabilities(trained_run))
    assert sorted(probabilities) == sorted(fold0["patientId"])
    labels = fold0.set_index("patientId").loc[list(probabilities), "target"]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, list(probabilities.values())))
    assert (metrics["images"], metrics["positives"]) == (8, int(fold0["target"].sum()))


@pytest.mark.slow
def test_predict_tool_gives_every_sample_dicom_a_probability(trained_run, tmp_path):
    output = tmp_path / "probabilities.csv"
    done = run_tool("--mode=predict", f"--model={trained_run.root}", f"--input={SAMPLE_DICOMS}",
                    f"--output={output}")
    assert done.returncode == 0, done.stderr[-3000:]
    probabilities = read_probabilities(output)
    assert sorted(probabilities) == sample_ids()
    values = np.array(list(probabilities.values()))
    assert ((values >= 0) & (values <= 1)).all()
    assert np.ptp(values) > 1e-3, "images must differ, or the comparisons below prove nothing"
    assert json.loads(predict.skipped_path(output).read_text()) == []


@pytest.mark.slow
def test_saved_model_gives_the_keras_models_probabilities(trained_run, converted_sample):
    images = [encoded for _, encoded, _ in data.read_examples([record_glob(converted_sample)])]
    assert len(images) == 16
    config = load_config(trained_run.root)
    model = build_classifier(config["backbone"], config["image_size"], config["num_outputs"],
                             batchnorm_momentum=config["batchnorm_momentum"])
    model.load_weights(str(best_weights(trained_run))).expect_partial()
    in_memory = Serving(model)(images).numpy()
    reloaded = load_saved_model(saved_model_path(trained_run))(images).numpy()
    np.testing.assert_allclose(reloaded, in_memory, atol=1e-5)
    assert np.ptp(in_memory) > 1e-3


@pytest.mark.slow
def test_dicoms_and_their_records_give_the_same_probabilities(trained_run, converted_sample,
                                                              tmp_path):
    from_dicoms = predict.predict(trained_run.root, SAMPLE_DICOMS, tmp_path / "dicoms.csv")
    from_records = predict.predict(saved_model_path(trained_run), record_glob(converted_sample),
                                   tmp_path / "records.csv", batch_size=5)
    assert from_dicoms["images"] == from_records["images"] == 16
    dicoms = read_probabilities(tmp_path / "dicoms.csv")
    records = read_probabilities(tmp_path / "records.csv")
    assert sorted(dicoms) == sorted(records) == sample_ids()
    np.testing.assert_allclose([records[i] for i in dicoms], list(dicoms.values()), atol=1e-5)


@pytest.mark.slow
def test_unreadable_inputs_are_listed_not_dropped(trained_run, tmp_path):
    real = sorted(SAMPLE_DICOMS.glob("*.dcm"))[:2]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(real[0].read_bytes()[:300])
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join([
        "# two real DICOMs, one twice, a truncated one, a missing one", str(real[0]),
        str(real[1]), str(real[1]), "truncated.dcm", "missing.dcm", ""]))
    summary = predict.predict(trained_run.root, listing, tmp_path / "out.csv")
    assert summary["images"] == 2 and summary["skipped"] == 3
    assert sorted(read_probabilities(tmp_path / "out.csv")) == [p.stem for p in real]
    reasons = {entry["patientId"]: entry["reason"]
               for entry in json.loads(predict.skipped_path(tmp_path / "out.csv").read_text())}
    assert set(reasons) == {real[1].stem, "truncated", "missing"}
    assert "repeated" in reasons[real[1].stem] and "cannot read" in reasons["missing"]


@pytest.mark.slow
def test_evaluate_all_folds(trained_run, converted_sample):
    metrics = evaluate_run(trained_run.root, converted_sample, fold=-1)
    folds = pd.read_csv(converted_sample / "folds.csv").set_index("patientId")
    probabilities = read_probabilities(val_probabilities(trained_run))
    assert sorted(probabilities) == sample_ids()
    labels = folds.loc[list(probabilities), "target"].to_numpy()
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, list(probabilities.values())))
    assert (metrics["images"], metrics["positives"]) == (16, 5)


def test_best_f1_is_the_best_over_thresholds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probabilities = np.round(np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1), 2)
    f1, threshold = best_f1(labels, probabilities)
    brute = {t: f1_score(labels, probabilities >= t) for t in np.unique(probabilities)}
    assert f1 == pytest.approx(max(brute.values()))
    assert brute[threshold] == pytest.approx(f1)


def test_three_way_labels_follow_the_class_info(converted_sample):
    class_info = data.read_class_info(CLASS_INFO_CSV)
    labeler = data.Labeler(class_info)
    examples = list(data.examples([record_glob(converted_sample)]))
    assert len(examples) == 16
    for example in examples:
        one_hot = labeler(example).numpy()
        assert one_hot.sum() == 1
        assert one_hot[-1] == float(example["has_box"])  # 'Lung Opacity' comes last
        assert data.CLASSES[one_hot.argmax()] == class_info_name(example, class_info)
    binary = [data.Labeler()(example).numpy().tolist() for example in examples]
    assert sum(value == [1.0] for value in binary) == 5


@pytest.mark.slow
def test_three_way_training_scores_the_opacity(converted_sample, tmp_path):
    result = train(ClassifierConfig(
        data_dir=str(converted_sample), run_dir=str(tmp_path / "run"), fold=-1,
        backbone="mobilenetv2", image_size=32, num_steps=2, batch_size=4,
        class_info=str(converted_sample / "folds.csv"), batchnorm_momentum=0.0))
    assert result["state"] == "finished"
    assert load_config(tmp_path / "run")["num_outputs"] == len(data.CLASSES)
    assert (result["metrics"]["images"], result["metrics"]["positives"]) == (16, 5)
    probabilities = read_probabilities(val_probabilities(RunFolder(tmp_path / "run")))
    assert sorted(probabilities) == sample_ids()


def class_info_name(example, class_info) -> str:
    return data.CLASSES[class_info[example["patient_id"].numpy().decode()]]


def test_bad_class_info_and_folds_are_one_line_errors(converted_sample, tmp_path):
    bad = tmp_path / "classes.csv"
    bad.write_text("patientId,class\na,Normal\nb,Pneumonia\n")
    with pytest.raises(BadInput, match=r"classes.csv, row 3: class 'Pneumonia'"):
        data.read_class_info(bad)
    one = tmp_path / "one.csv"
    one.write_text(f"patientId,class\n{sample_ids()[0]},Normal\n")
    with pytest.raises(BadInput, match=r"one.csv: 15 patient\(s\) of .* have no class"):
        data.check_class_info(data.read_class_info(one), converted_sample, one)
    with pytest.raises(BadInput, match=r"--fold=5 is not among the folds \[0, 1\]"):
        data.split_for(converted_sample, 5)
    every = data.split_for(converted_sample, -1)
    assert every.train == every.eval and len(every.train) == 2


def test_bad_data_dir_exits_2_with_one_line(tmp_path):
    done = run_tool("--mode=train", f"--data_dir={tmp_path / 'nowhere'}",
                    f"--run_dir={tmp_path / 'run'}", "--backbone=mobilenetv2")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("nowhere: not a finished tfod-convert folder (no manifest.json)")
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def negatives_with_false_positives(truth: dict, rng) -> dict:
    """Detections: every true box jittered by a few pixels (score 0.9), and two boxes of
    score 0.8 on each image without an opacity."""
    found = {}
    for patient_id, image in truth.items():
        if len(image.boxes):
            boxes = image.boxes + rng.normal(0, 4, image.boxes.shape)
            found[patient_id] = det.ImageBoxes(boxes, np.full(len(boxes), 0.9))
        else:
            boxes = rng.uniform(100, 500, (2, 4))
            found[patient_id] = det.ImageBoxes(boxes, np.full(2, 0.8))
    return found


@pytest.fixture(scope="module")
def sample_truth() -> dict:
    labels = det.read_labels(LABELS_CSV)
    return {patient_id: labels[patient_id] for patient_id in sample_ids()}


def classifier_csv(truth: dict, path) -> dict[str, float]:
    """A classifier that gives the negative images a low probability, through its CSV."""
    predict.write_probabilities(
        {i: 0.95 if len(image.boxes) else 0.05 for i, image in truth.items()}, path)
    return read_probabilities(path)


def test_gating_by_multiplication_raises_the_competition_score(sample_truth, tmp_path):
    detections = negatives_with_false_positives(sample_truth, np.random.default_rng(1))
    probabilities = classifier_csv(sample_truth, tmp_path / "classifier.csv")
    gated = {i: det.ImageBoxes(image.boxes, image.scores * probabilities[i])
             for i, image in detections.items()}
    ungated_score = competition_score(sample_truth, detections, min_score=0.5)
    gated_score = competition_score(sample_truth, gated, min_score=0.5)
    assert gated_score > ungated_score + 0.3
    negatives = [i for i, image in sample_truth.items() if not len(image.boxes)]

    def on_negatives(boxes: dict) -> dict:
        return {i: boxes[i] for i in negatives}

    assert competition_score(on_negatives(sample_truth), on_negatives(detections), 0.5) == 0.0
    # gated, no box is left on a negative image, so none of them counts against the score
    assert np.isnan(competition_score(on_negatives(sample_truth), on_negatives(gated), 0.5))
    positives = {i: image for i, image in sample_truth.items() if i not in negatives}
    assert (competition_score(positives, {i: gated[i] for i in positives}, 0.5)
            == competition_score(positives, {i: detections[i] for i in positives}, 0.5))


def test_gating_through_the_ensemble_stage(sample_truth, tmp_path):
    """The ensemble stage's own CSV reader and gating (tfod.infer, another branch): must exist."""
    from tfod.infer import ensemble, outside

    detections = negatives_with_false_positives(sample_truth, np.random.default_rng(2))
    classifier_csv(sample_truth, tmp_path / "classifier.csv")
    probabilities = outside.read_probabilities(tmp_path / "classifier.csv")
    gated = ensemble.gate(detections, probabilities, "multiply")
    assert sorted(gated) == sorted(detections)
    assert (competition_score(sample_truth, gated, min_score=0.5)
            > competition_score(sample_truth, detections, min_score=0.5) + 0.3)


def test_input_is_read_by_the_rule_predict_uses(tmp_path):
    """A DICOM list with comments and relative paths, as tfod-predict reads it."""
    first, second = sorted(SAMPLE_DICOMS.glob("*.dcm"))[:2]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two of the sample\n{os.path.relpath(first, tmp_path)}\n\n"
                       f"{second}  # absolute\n")
    skipped = []
    ids = [patient_id for patient_id, _ in predict.input_images(listing, skipped)]
    assert ids == [first.stem, second.stem] and skipped == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match="holds no .dcm files"):
        predict.input_images(empty, [])
