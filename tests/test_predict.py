"""tfod-predict on the real sample: DICOMs and TFRecords agree, the evaluator agrees, boxes are in
each image's own frame (512x512, 600x400), hflip TTA fuses back, every input is accounted for.

The trained run and its export are the session fixtures of ``conftest``.
"""
import json

import numpy as np
import pydicom
import pytest
from conftest import SAMPLE_DICOMS, one_line_error, run_tool
from dicom_files import resized_dicom, write_dicom

from tfod import boxes as box_ops
from tfod import detections as det
from tfod.data.dicom import load_image_8bit
from tfod.errors import BadInput
from tfod.infer import predict as infer
from tfod.infer.model import ExportedModel

RSNA_SIZE = 1024


@pytest.fixture(scope="module")
def model(exported_best) -> ExportedModel:
    return ExportedModel(exported_best)


def assert_same(a: dict, b: dict, tolerance: float):
    assert list(a) == list(b)
    for patient_id in a:
        assert len(a[patient_id]) == len(b[patient_id]), patient_id
        np.testing.assert_allclose(a[patient_id].boxes, b[patient_id].boxes, atol=tolerance)
        np.testing.assert_allclose(a[patient_id].scores, b[patient_id].scores, atol=1e-6)


def test_hflip_yxyx_mirrors_and_inverts():
    boxes = np.array([[0.1, 0.2, 0.5, 0.3]])
    np.testing.assert_allclose(box_ops.hflip_yxyx(boxes), [[0.1, 0.7, 0.5, 0.8]])
    np.testing.assert_allclose(box_ops.hflip_yxyx(box_ops.hflip_yxyx(boxes)), boxes)


@pytest.mark.slow
def test_dicoms_and_their_tfrecords_give_the_same_boxes(model, sample_dicoms, converted_sample):
    from_dicoms, skipped = infer.predict(model, sample_dicoms[0].parent, progress=False)
    assert not skipped and len(from_dicoms) == 16
    from_records, skipped = infer.predict(model, str(converted_sample / "*.tfrecord"),
                                          batch_size=3, progress=False)
    assert not skipped
    assert any(len(image) for image in from_dicoms.values())
    assert_same(from_dicoms, {k: from_records[k] for k in from_dicoms}, 1e-4 * RSNA_SIZE)


@pytest.mark.slow
def test_evaluator_and_predict_agree_on_the_eval_fold(model, trained_run, exported_best):
    """Both resize with the model's own resizer (the evaluator in the input pipeline, predict
    on the host), so the boxes agree to float precision."""
    step = json.loads((exported_best / "export.json").read_text())["step"]
    evaluator = det.read_detections(trained_run.val_detections(step))
    listing = trained_run.root / "eval_images.txt"
    listing.write_text("".join(f"{SAMPLE_DICOMS / patient_id}.dcm\n" for patient_id in evaluator))
    predicted, skipped = infer.predict(model, listing, batch_size=4, progress=False)
    assert not skipped and len(predicted) == 8
    assert_same({k: evaluator[k] for k in predicted}, predicted, 1e-4 * RSNA_SIZE)


@pytest.mark.slow
def test_boxes_are_in_each_images_own_frame(model, sample_dicoms, tmp_path):
    """A 512x512 and a 600x400 DICOM: predict's boxes equal the model's normalized boxes mapped
    by hand (x by the width 600, y by the height 400), so a swapped axis anywhere fails."""
    folder = tmp_path / "sizes"
    folder.mkdir()
    square = resized_dicom(sample_dicoms[0], 512, 512, folder / "square.dcm")
    wide = resized_dicom(sample_dicoms[1], 600, 400, folder / "wide.dcm")
    detections, skipped = infer.predict(model, folder, progress=False)
    assert not skipped and set(detections) == {"square", "wide"}
    for path, (width, height) in ((square, (512, 512)), (wide, (600, 400))):
        pixels = pydicom.dcmread(path).pixel_array  # rows x columns, read independently
        assert pixels.shape == (height, width)
        boxes, scores = model(model.resize(pixels)[np.newaxis])
        ymin, xmin, ymax, xmax = boxes[0].T
        by_hand = np.stack([xmin * width, ymin * height, (xmax - xmin) * width,
                            (ymax - ymin) * height], axis=-1)
        found = detections[path.stem]
        assert len(found) > 0
        np.testing.assert_allclose(found.boxes, by_hand, atol=1e-6)
        np.testing.assert_allclose(found.scores, scores[0])
        assert np.all(found.boxes[:, 0] + found.boxes[:, 2] <= width + 1e-6)
        assert np.all(found.boxes[:, 1] + found.boxes[:, 3] <= height + 1e-6)


class BrightPatchDetector:
    """A detector with the ExportedModel interface that boxes the pixels above 128: exactly
    mirror-equivariant, so both TTA views see the same object."""

    input_size = None

    def resize(self, image):
        return np.broadcast_to(np.asarray(image, np.float32)[..., None], image.shape[:2] + (3,))

    def __call__(self, images):
        boxes, scores = [], []
        for image in images:
            rows, columns = np.nonzero(image[..., 0] > 128)
            height, width = image.shape[:2]
            boxes.append(np.array([[rows.min() / height, columns.min() / width,
                                    (rows.max() + 1) / height, (columns.max() + 1) / width]]))
            scores.append(np.array([0.8]))
        return boxes, scores


def test_hflip_tta_fuses_the_mirrored_view_back_onto_the_original(sample_dicoms, tmp_path):
    """A bright patch left of centre in a 600x400 image, a detector that sees it in both views:
    the fused box is the patch itself, with its score, one row set per image."""
    pixels = np.zeros((400, 600), np.uint8)
    pixels[50:150, 60:200] = 255
    folder = tmp_path / "patch"
    folder.mkdir()
    write_dicom(sample_dicoms[0], pixels, folder / "patch.dcm")
    write_dicom(sample_dicoms[0], pixels[::-1], folder / "upside_down.dcm")
    plain, _ = infer.predict(BrightPatchDetector(), folder, progress=False)
    fused, _ = infer.predict(BrightPatchDetector(), folder, tta="hflip", progress=False)
    np.testing.assert_allclose(plain["patch"].boxes, [[60, 50, 140, 100]], atol=1e-9)
    np.testing.assert_allclose(plain["upside_down"].boxes, [[60, 250, 140, 100]], atol=1e-9)
    assert list(fused) == ["patch", "upside_down"]
    for patient_id in fused:
        np.testing.assert_allclose(fused[patient_id].boxes, plain[patient_id].boxes, atol=1e-3)
        np.testing.assert_allclose(fused[patient_id].scores, [0.8], atol=1e-6)


@pytest.mark.slow
def test_hflip_tta_with_the_exported_model_is_the_fusion_of_both_views(model, sample_dicoms):
    fused, _ = infer.predict(model, sample_dicoms[0].parent, tta="hflip", progress=False)
    assert len(fused) == 16
    image = model.resize(load_image_8bit(sample_dicoms[0]))
    (boxes,), (scores,) = model(image[np.newaxis])
    (flipped,), (flipped_scores,) = model(np.ascontiguousarray(image[np.newaxis, :, ::-1]))
    expected_boxes, expected_scores = infer.fuse_flipped(boxes, scores, flipped, flipped_scores)
    expected = box_ops.yxyx_to_xywh(expected_boxes, RSNA_SIZE, RSNA_SIZE)
    image_result = fused[sample_dicoms[0].stem]
    # Boxes of tied scores may come in either order: compare the rows as a set.
    np.testing.assert_allclose(_sorted_rows(image_result.boxes, image_result.scores),
                               _sorted_rows(expected, expected_scores), atol=1e-3)


def _sorted_rows(boxes, scores):
    rows = np.column_stack([np.round(scores, 4), np.round(boxes, 1)])
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.slow
def test_every_input_is_in_the_output_or_skipped(model, sample_dicoms, tmp_path):
    listing = tmp_path / "inputs.txt"
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(sample_dicoms[2].read_bytes()[:300])
    listing.write_text("\n".join([str(sample_dicoms[0]), "truncated.dcm", "# a comment",
                                  str(sample_dicoms[1]), "missing.dcm", str(sample_dicoms[0])]))
    detections, skipped = infer.predict(model, listing, min_score=1.0, progress=False)
    assert list(detections) == [sample_dicoms[0].stem, sample_dicoms[1].stem]
    assert all(len(image) == 0 for image in detections.values())  # nothing scores 1.0
    reasons = {item.input.rsplit("/", 1)[-1]: item.reason for item in skipped}
    assert set(reasons) == {"truncated.dcm", "missing.dcm", sample_dicoms[0].name}
    assert "already read" in reasons[sample_dicoms[0].name]
    output = tmp_path / "out.csv"
    infer.write_predictions(detections, skipped, output)
    rows = output.read_text().splitlines()
    assert rows[1:] == [f"{stem}," + "," * 4 for stem in detections]  # one empty row each
    assert len(json.loads(infer.skipped_path(output).read_text())) == 3


def test_bad_options_and_inputs_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="matches no file"):
        infer.predict(BrightPatchDetector(), str(tmp_path / "*.tfrecord"))
    with pytest.raises(BadInput, match="holds no .dcm"):
        infer.predict(BrightPatchDetector(), tmp_path)
    with pytest.raises(BadInput, match="tta"):
        infer.predict(BrightPatchDetector(), tmp_path, tta="vflip")
    with pytest.raises(BadInput, match="not an exported detector"):
        ExportedModel(tmp_path)


@pytest.mark.slow
def test_tool_writes_detections_skipped_and_submission(trained_run, exported_best, tmp_path):
    output, submission = tmp_path / "pred.csv", tmp_path / "submission.csv"
    done = run_tool("predict", f"--model={trained_run.root}", f"--input={SAMPLE_DICOMS}",
                    f"--output={output}", f"--submission={submission}", "--threshold=0.0",
                    "--tta=hflip", "--batch_size=5", "--noprogress")
    assert done.returncode == 0, done.stderr[-3000:]
    detections = det.read_detections(output)
    assert len(detections.ids) == 16
    assert json.loads(infer.skipped_path(output).read_text()) == []
    assert set(det.read_submission(submission).ids) == set(detections.ids)
    assert "submission boxes score >= 0.0" in done.stdout
    record = json.loads((exported_best / "export.json").read_text())
    assert infer.export_threshold(trained_run.root) == record["rsna/threshold"] is not None


@pytest.mark.slow
def test_tool_errors_are_one_line(trained_run, tmp_path):
    output = f"--output={tmp_path / 'x.csv'}"
    line = one_line_error(run_tool("predict", f"--model={tmp_path}",
                                   f"--input={SAMPLE_DICOMS}", output))
    assert "not an exported detector" in line
    fake = tmp_path / "fake" / "saved_model"
    fake.mkdir(parents=True)
    (fake / "saved_model.pb").write_bytes(b"not a protobuf")
    line = one_line_error(run_tool("predict", f"--model={fake.parent}",
                                   f"--input={SAMPLE_DICOMS}", output))
    assert "SavedModel" in line
    line = one_line_error(run_tool("predict", f"--model={trained_run.root}",
                                   f"--input={tmp_path / 'none-*.tfrecord'}", output))
    assert "matches no file" in line
