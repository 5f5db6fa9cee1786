"""Evaluation outputs on the 16 real images: metrics, plots, gallery, and the tool."""
import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import LABELS_CSV, REPO, SAMPLE_DICOMS
from PIL import Image

from tfod import detections as det
from tfod.boxes import scale_xywh
from tfod.detections import BoxTable, ImageBoxes
from tfod.errors import BadInput
from tfod.scoring import metric as score
from tfod.scoring import report, stage

METRIC_KEYS = {"score", "threshold", "box_scale", "images", "tp", "fp", "fn", "curve"}


class _Page(HTMLParser):
    """Collects the gallery's figures and images; fails on unbalanced figure tags."""

    def __init__(self):
        super().__init__()
        self.figures, self.images, self.buttons, self.open = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs)
            self.open += 1
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "button":
            self.buttons.append(attrs["data-filter"])

    def handle_endtag(self, tag):
        if tag == "figure":
            self.open -= 1


@pytest.fixture(scope="module")
def sample(sample_dicoms):
    """Ground truth of the 16 real images and predictions: 3 right, 1 miss, 2 false positives."""
    labels = det.read_labels(LABELS_CSV).subset([path.stem for path in sample_dicoms])
    predictions = {}
    positives = [key for key in labels if len(labels[key])]
    negatives = [key for key in labels if not len(labels[key])]
    for i, key in enumerate(positives):
        boxes = scale_xywh(labels[key].boxes, 1.3)  # 30% too large
        predictions[key] = ImageBoxes(boxes[: 1 if i == 0 else 2], [0.9, 0.8][: 1 if i == 0 else 2])
    predictions[negatives[0]] = ImageBoxes([[300, 300, 200, 250]], [0.95])
    predictions[negatives[1]] = ImageBoxes([[600, 300, 200, 250]], [0.2])
    for key in negatives[2:]:
        predictions[key] = ImageBoxes.empty()
    return labels, predictions


def _valid_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()


def test_evaluate_writes_metrics_plots_and_gallery(tmp_path, sample):
    labels, predictions = sample
    metrics = stage.score_detections(labels, predictions, tmp_path, dicom_dir=SAMPLE_DICOMS)
    assert METRIC_KEYS <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert len(metrics["curve"]) == len(score.MIN_SCORES)
    assert metrics["threshold"] == 0.21  # drops the 0.2 false positive, not the 0.95 one
    assert metrics["images_total"] == 16 and metrics["images"] == 6  # 5 positives + 1 FP
    assert metrics["fp"] == 1 and metrics["fn"] == 1 and metrics["tp"] == 9
    assert metrics["box_scale"] == 1.0  # the score is the detections' unscaled
    assert metrics["score"] == pytest.approx(score.competition_score(
        labels, predictions, metrics["threshold"]))
    fitted = metrics["fitted"]
    assert fitted["box_scale"] == 0.88  # the largest scale that undoes 1.3 (IoU > 0.75)
    assert fitted["score"] == pytest.approx(score.competition_score(
        labels, predictions, fitted["threshold"], fitted["box_scale"]))
    assert fitted["score"] > metrics["score"]
    assert metrics["box_errors"]["width_ratio"]["median"] == pytest.approx(1.3)  # unscaled
    for name in ("threshold_curve.png", "box_scale_curve.png", "box_errors.png"):
        _valid_png(tmp_path / name)

    gallery = tmp_path / "gallery"
    page = _Page()
    page.feed((gallery / "index.html").read_text())
    page.close()
    assert page.open == 0 and page.buttons == ["all", "fp", "fn"]
    assert len(page.images) == 16 and metrics["gallery"]["missing_dicoms"] == 0
    for src in page.images:
        with Image.open(gallery / src) as image:
            assert image.format == "JPEG" and image.size == (512, 512)
            image.verify()
    scores = [float(f["data-score"]) for f in page.figures if f["data-score"] != "left out"]
    assert scores == sorted(scores) and len(scores) == 6  # worst first, left-out images last
    assert [f["data-fp"] for f in page.figures].count("1") == 1
    assert [f["data-fn"] for f in page.figures].count("1") == 1
    assert page.figures[0]["data-score"] == "0.000"  # the false positive on a negative image


def test_gallery_shows_the_worst_images_up_to_the_limit_and_counts_the_rest(tmp_path, sample):
    labels, predictions = sample
    # 48 images (each real DICOM under 3 names), drawn 10: the page holds a fixed number.
    dicom_dir, items, rng = tmp_path / "dicoms", [], np.random.default_rng(0)
    dicom_dir.mkdir()
    for copy in range(3):
        for path in SAMPLE_DICOMS.glob("*.dcm"):
            name = f"{path.stem}-{copy}"
            (dicom_dir / f"{name}.dcm").symlink_to(path)
            score = float("nan") if copy == 2 and rng.random() < 0.5 else rng.random()
            items.append(report.GalleryItem(name, score, np.zeros((0, 4)), np.zeros((0, 4)),
                                            np.zeros(0), 0, 0, 0))
    summary = report.write_gallery(items, dicom_dir, tmp_path / "gallery", limit=10)
    page = _Page()
    html = (tmp_path / "gallery" / "index.html").read_text()
    page.feed(html)
    assert summary["images"] == len(page.figures) == len(page.images) == 10
    assert summary["left_out"] == 38 and len(list((tmp_path / "gallery").glob("*.jpg"))) == 10
    assert "38 images are left out: the page shows the 10 worst of 48" in html
    worst = sorted(item.score for item in items if not np.isnan(item.score))[:10]
    assert [float(f["data-score"]) for f in page.figures] == pytest.approx(worst, abs=5e-4)


def test_evaluate_draws_the_default_number_of_worst_images(tmp_path, sample, monkeypatch):
    labels, predictions = sample
    monkeypatch.setattr(stage, "GALLERY_LIMIT", 4)  # the default, read when called
    metrics = stage.score_detections(labels, predictions, tmp_path / "out",
                                     dicom_dir=SAMPLE_DICOMS)
    assert metrics["gallery"]["images"] == 4 and metrics["gallery"]["left_out"] == 12
    everything = stage.score_detections(labels, predictions, tmp_path / "all",
                                        dicom_dir=SAMPLE_DICOMS, gallery_limit=0)
    assert everything["gallery"]["images"] == 16 and everything["gallery"]["left_out"] == 0


def test_given_threshold_and_scale_are_used(tmp_path, sample):
    labels, predictions = sample
    metrics = stage.score_detections(labels, predictions, tmp_path, threshold=0.1, box_scale=1.0)
    assert metrics["threshold"] == 0.1 and metrics["box_scale"] == 1.0
    assert metrics["fp"] == 2 and "gallery" not in metrics
    assert metrics["score"] == pytest.approx(score.competition_score(labels, predictions, 0.1))


def test_gallery_draws_truth_black_and_predictions_green():
    item = report.GalleryItem("x", 0.5, np.array([[100, 100, 400, 400]]),
                              np.array([[600, 600, 300, 300]]), np.array([0.5]), 0, 1, 1)
    pixels = np.full((1024, 1024), 128, dtype=np.uint8)
    image = np.asarray(report.draw_image(pixels, item, size=512))
    assert image.shape == (512, 512, 3)
    assert (image[150, 51] == 0).all()  # left edge of the truth at x = 50 (scaled by 1/2)
    assert tuple(image[400, 300]) == report.PREDICTED_COLOUR
    assert (image[150, 150] == 128).all()  # inside: the X-ray untouched


def _write_folds(path, ids):
    rows = [f"{key},{i % 2},0,Normal,PA" for i, key in enumerate(ids)]
    path.write_text("patientId,fold,target,class,view_position\n" + "\n".join(rows) + "\n")


def test_tool_scores_one_fold(tmp_path, sample):
    labels, predictions = sample
    detections = det.write_detections(predictions, tmp_path / "val.csv")
    _write_folds(tmp_path / "folds.csv", list(labels))
    fold_ids = list(labels)[1::2]
    out = tmp_path / "metrics"
    result = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", f"--detections={detections}",
         f"--labels_csv={LABELS_CSV}", f"--folds_csv={tmp_path / 'folds.csv'}", "--fold=1",
         f"--output_dir={out}", "--threshold=0.5"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "score" in result.stdout and "tp / fp / fn" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images_total"] == 8 and metrics["detections_outside_fold"] == 8
    fold = BoxTable.of(labels).subset(fold_ids)
    fold_predictions = {key: predictions[key] for key in fold_ids}
    assert metrics["score"] == pytest.approx(score.competition_score(
        fold, fold_predictions, 0.5, metrics["box_scale"]))


def test_tool_names_the_bad_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("patientId,x,y,width,height,score\n"
                   "0004cfab-14fd-4e49-80ba-63a80b6bddd6,1,2,3,4,1.5\n")
    result = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", f"--detections={bad}",
         f"--labels_csv={LABELS_CSV}", f"--output_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode != 0
    assert f"{bad}, row 2: score 1.5 is outside [0, 1]" in result.stderr


# --- the stage's reliability: files in, one line per bad input, nothing stale -------------------


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "tools.evaluate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, check=False)


def test_a_truncated_dicom_is_listed_the_rest_drawn_and_stale_outputs_cleared(
        tmp_path, sample, sample_dicoms):
    labels, predictions = sample
    dicoms = tmp_path / "dicoms"
    dicoms.mkdir()
    for path in sample_dicoms:
        (dicoms / path.name).write_bytes(path.read_bytes())
    broken = sample_dicoms[0]
    (dicoms / broken.name).write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    out = tmp_path / "out"
    (out / "gallery").mkdir(parents=True)
    (out / "gallery" / "stale-image.jpg").write_bytes(b"from an earlier run")
    (out / "metrics.json").write_text('{"score": 0.99}')
    (out / "notes.txt").write_text("not the stage's: kept")
    detections = det.write_detections(predictions, tmp_path / "val.csv")

    result = _evaluate(f"--detections={detections}", f"--labels_csv={LABELS_CSV}",
                       f"--output_dir={out}", f"--dicom_dir={dicoms}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["score"] != 0.99 and list(metrics["not_drawn"]) == [broken.stem]
    assert "truncated" in metrics["not_drawn"][broken.stem]
    assert f"not drawn: {broken.stem}: " in result.stdout
    assert metrics["gallery"]["images"] == 15
    assert sorted(p.stem for p in (out / "gallery").glob("*.jpg")) == sorted(
        p.stem for p in sample_dicoms[1:])
    assert (out / "notes.txt").exists() and (out / "threshold_curve.png").exists()


def test_a_kaggle_submission_scores_as_its_detections(tmp_path, sample):
    labels, predictions = sample
    as_csv = stage.score_files(det.write_detections(predictions, tmp_path / "val.csv"),
                               LABELS_CSV, tmp_path / "a", threshold=0.3)
    as_submission = stage.score_files(det.write_submission(predictions, tmp_path / "sub.csv"),
                                      LABELS_CSV, tmp_path / "b", threshold=0.3)
    assert as_submission["score"] == as_csv["score"] and as_submission["images_total"] == 16
    assert as_submission["fitted"] == as_csv["fitted"]


def test_labelled_images_left_out_are_counted_and_images_picks_them(tmp_path, sample):
    labels, predictions = sample
    ids = list(labels)
    detections = det.write_detections({i: predictions[i] for i in ids[:10]}, tmp_path / "d.csv")
    alone = stage.score_files(detections, LABELS_CSV, tmp_path / "a")
    assert alone["images_total"] == 10
    left_out = alone["labelled_images_not_scored"]
    assert left_out == len(det.read_labels(LABELS_CSV)) - 10
    assert f"{left_out} labelled image(s) have no row" in stage.format_table(alone)

    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    listed = stage.score_files(detections, LABELS_CSV, tmp_path / "b", threshold=0.5,
                               images=tmp_path / "ids.txt")
    assert listed["images_total"] == 16 and listed["images_without_detections"] == 6
    with_empty = {i: predictions[i] if i in ids[:10] else ImageBoxes.empty() for i in ids}
    assert listed["score"] == pytest.approx(score.competition_score(
        labels.subset(ids), with_empty, 0.5))
    assert "6 image(s) of --images have no row" in stage.format_table(listed)

    _write_folds(tmp_path / "folds.csv", ids[:4])  # any CSV with a patientId column
    four = stage.score_files(detections, LABELS_CSV, tmp_path / "c", images=tmp_path / "folds.csv")
    assert four["images_total"] == 4 and four["detections_outside_images"] == 6


def test_a_header_only_file_is_refused_alone_and_scored_loudly_with_images(tmp_path, sample):
    labels, _ = sample
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(det.DETECTIONS_HEADER) + "\n")
    with pytest.raises(BadInput, match="no detection row: nothing to score"):
        stage.score_files(empty, LABELS_CSV, tmp_path / "a")
    (tmp_path / "ids.txt").write_text("\n".join(labels) + "\n")
    metrics = stage.score_files(empty, LABELS_CSV, tmp_path / "b", images=tmp_path / "ids.txt")
    assert metrics["score"] == 0.0 and metrics["images_without_detections"] == 16
    assert "WARNING" in stage.format_table(metrics)


def test_the_table_says_which_threshold_the_score_is_at_and_the_fitted_one(tmp_path, sample):
    labels, predictions = sample
    best = stage.score_detections(labels, predictions, tmp_path)
    table = stage.format_table(best)
    assert best["threshold_from"] == "best"
    assert "score at its best threshold" in table and "score with fitted box scale" in table
    given = stage.score_detections(labels, predictions, tmp_path, threshold=0.5)
    assert given["threshold_from"] == "given" and given["threshold"] == 0.5
    assert "score at the given threshold" in stage.format_table(given)
    assert "fitted box scale @ threshold  0.88 @" in table


@pytest.mark.parametrize("options, message", [
    ({"box_scale": 0}, "--box_scale must be a positive number"),
    ({"threshold": 1.5}, "--threshold must be in"),
    ({"dicom_dir": "/no/such/folder"}, "no such folder"),
])
def test_bad_options_are_refused_before_reading(tmp_path, options, message):
    with pytest.raises(BadInput, match=message):
        stage.score_files(tmp_path / "none.csv", LABELS_CSV, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


GOOD_ID = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"


@pytest.mark.parametrize("text, row, reason", [
    ("patientId,x,y,width,height,score\n" + GOOD_ID + ",1,2,3,4,x\n", 2, "is not a number"),
    ("patientId\tx\ty\twidth\theight\tscore\n", 1, "is not patientId,x,y,width,height,score"),
    ("patientId,x,y,width,height,score,\n", 1, "is not patientId,x,y,width,height,score"),
    ("", 1, "empty file"),
    ("patientId,PredictionString\n" + GOOD_ID + ",0.5 1 2 3\n", 2, "groups of 5"),
    ("patientId,x,y,width,height,score\nnot-a-patient,1,2,3,4,0.5\n", None, "not in the labels"),
])
def test_every_detections_error_is_one_line_exit_2(tmp_path, text, row, reason):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    result = _evaluate(f"--detections={bad}", f"--labels_csv={LABELS_CSV}",
                       f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    where = f"{bad}, row {row}: " if row else f"{bad}: "
    assert ": error: " + where in lines[0] and reason in lines[0]


def test_unusable_files_and_folders_are_bad_input(tmp_path, sample):
    labels, predictions = sample
    detections = det.write_detections(predictions, tmp_path / "val.csv")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(BadInput, match="cannot write the output folder"):
        stage.score_files(detections, LABELS_CSV, a_file / "out")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(BadInput, match="not a text CSV file"):
        stage.score_files(binary, LABELS_CSV, tmp_path / "out")
    with pytest.raises(BadInput, match="not both"):
        stage.score_files(detections, LABELS_CSV, tmp_path / "out", folds_csv=a_file, fold=0,
                          images=a_file)
    with pytest.raises(BadInput, match="no such file"):
        stage.score_files(detections, tmp_path / "labels.csv", tmp_path / "out")
    two_columns = tmp_path / "ids.csv"
    two_columns.write_text("id,fold\nx,0\n")
    with pytest.raises(BadInput, match=f"{two_columns}, row 1: neither one patientId per line"):
        stage.score_files(detections, LABELS_CSV, tmp_path / "out", images=two_columns)


@pytest.mark.parametrize("text, reason", [
    ("", "row 1: empty file"),
    ("patientId,x,y,width,height\n", "row 1: "),
    ("patientId,x,y,width,height,Target\n", "no label row"),
    ("patientId,x,y,width,height,Target\n" + GOOD_ID + ",1,2,3,4,0\n", "row 2: "),
])
def test_a_bad_labels_file_is_named(tmp_path, sample, text, reason):
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(text)
    detections = det.write_detections(sample[1], tmp_path / "val.csv")
    with pytest.raises(BadInput, match=f"{labels_csv}, {reason}|{labels_csv}: {reason}"):
        stage.score_files(detections, labels_csv, tmp_path / "out")
