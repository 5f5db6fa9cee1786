"""tfod-export --format onnx/tflite and --serving_input encoded on the session's trained run:
each format predicts what the SavedModel predicts on the 16 sample DICOMs, and tfod-ensemble
--models fuses the model files; the encoded serving SavedModel takes PNG bytes; families that
do not convert are refused in one line, up front. A tiny RetinaNet converts with the same parity.

The trained run comes from ``conftest``'s session fixture (SSD MobileNet v2 at 128 px).
"""
import io

import numpy as np
import pytest
import tensorflow as tf
from conftest import LABELS_CSV, SAMPLE_DICOMS, one_line_error, run_tool, tiny_run
from PIL import Image

from tfod import detections as det
from tfod.config import pipeline as configs
from tfod.data.dicom import load_image_8bit
from tfod.errors import BadInput
from tfod.infer import ensemble, export, formats, sizes
from tfod.infer import predict as infer
from tfod.infer.model import DETECTION_OUTPUTS, ExportedModel
from tfod.runfolder import ExportFolder, RunFolder, read_json
from tfod.scoring.metric import competition_score

RSNA_SIZE = 1024


@pytest.fixture(scope="module")
def exported_formats(trained_run, tmp_path_factory) -> ExportFolder:
    """The best checkpoint exported by the tool in every format, with the encoded signature
    (2 to 5 minutes on 2 shared cores: tf2onnx, two TFLite conversions, a second OD API
    export)."""
    folder = ExportFolder(tmp_path_factory.mktemp("formats") / "exported")
    done = run_tool("export", f"--run_dir={trained_run.root}", f"--output_dir={folder.root}",
                    "--format=onnx", "--format=tflite", "--calibration_images=8",
                    "--serving_input=encoded")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


RETINANET_STEPS = 2
# Overrides that keep a RetinaNet this new ranking its anchors. The box predictor's initial
# weights widened (base config: stddev 0.01, with which every one of its ~8000 anchors scores
# 0.00996 +- 1e-5 and which 20 survive is float noise; at 0.05 the kept scores spread over about
# 0.2 to 0.6). Batch norm frozen and a near-zero learning rate: the scratch ResNet's batch
# statistics are huge, and two steps of updating the moving ones (or the weights) saturate
# every score near 1 with zero-area boxes.
RETINANET_OVERRIDES = [
    "model.ssd.box_predictor.weight_shared_convolutional_box_predictor.conv_hyperparams."
    "initializer.random_normal_initializer.stddev=0.05",
    "model.ssd.freeze_batchnorm=true",
]


@pytest.fixture(scope="module")
def retinanet_exported(converted_sample, tmp_path_factory) -> ExportFolder:
    """RetinaNet (SSD ResNet-50 v1 FPN) at its smallest input (256 px, batch 1) trained
    ``RETINANET_STEPS`` steps from scratch (``RETINANET_OVERRIDES``), exported by the tool as ONNX
    and TFLite (int8 calibrated on one image) with score threshold 0."""
    run = tiny_run(tmp_path_factory.mktemp("retinanet") / "run", "retinanet_resnet50",
                   converted_sample, roles=("train",), checkpoint_every=RETINANET_STEPS,
                   image_size=256, batch_size=1, num_steps=RETINANET_STEPS,
                   learning_rate=1e-6, overrides=RETINANET_OVERRIDES)
    done = run_tool("export", f"--run_dir={run.root}", "--checkpoint=latest", "--format=onnx",
                    "--format=tflite", "--calibration_images=1", "--config_override=model.ssd."
                    "post_processing.batch_non_max_suppression.score_threshold=0")
    assert done.returncode == 0, done.stderr[-3000:]
    return ExportFolder(run.exported)


def predict_each(folder: ExportFolder, names=("savedmodel", "onnx", "tflite", "tflite_int8")
                 ) -> dict:
    """Each named format's detections on the 16 sample DICOMs (no TTA), by format."""
    paths = {"savedmodel": folder.root, "onnx": folder.onnx, "tflite": folder.tflite,
             "tflite_int8": folder.tflite_int8}
    result = {}
    for name in names:
        detections, skipped = infer.predict(paths[name], SAMPLE_DICOMS, batch_size=4,
                                            progress=False)
        assert not skipped and len(detections) == 16
        result[name] = detections
    return result


@pytest.fixture(scope="module")
def predictions(exported_formats) -> dict:
    return predict_each(exported_formats)


@pytest.mark.slow
def test_export_json_records_every_format_written(exported_formats):
    record = read_json(exported_formats.export_json)
    assert record["formats"] == {"savedmodel": "saved_model", "onnx": "model.onnx",
                                 "tflite": "model.tflite", "tflite_int8": "model_int8.tflite",
                                 "serving": "serving/1"}
    for path in (exported_formats.onnx, exported_formats.tflite, exported_formats.tflite_int8,
                 exported_formats.serving_saved_model / "saved_model.pb"):
        assert path.is_file() and path.stat().st_size > 0, path
    assert record["calibration_images"] == 8
    # SSD MobileNet v2 scales pixels to [-1, 1]: the TFLite graph's input, done on the host
    np.testing.assert_allclose(record["tflite_input"]["scale"], [2 / 255] * 3, rtol=1e-5)
    np.testing.assert_allclose(record["tflite_input"]["offset"], [-1.0] * 3, atol=1e-6)


def unmatched(expected, got, box_tolerance: float, score_tolerance: float) -> int:
    """How many of ``expected``'s boxes have no box of ``got`` (each used once) within the
    tolerances: a set comparison, since boxes of equal score may come in either order."""
    free = list(range(len(got)))
    missing = 0
    for box, score in zip(expected.boxes, expected.scores, strict=True):
        hits = [j for j in free if abs(got.scores[j] - score) <= score_tolerance
                and np.abs(got.boxes[j] - box).max() <= box_tolerance]
        if hits:
            free.remove(hits[0])
        else:
            missing += 1
    return missing


def assert_same_detections(reference: dict, converted: dict) -> None:
    """Every box the models return, not only those above 0.05 (tiny models' scores are mostly
    below it and nearly tied). With tied scores, the max-detections cut-off may keep either of
    two boxes whose scores differ by float noise (about 1e-7), so up to a tenth of an image's
    boxes may differ at the tail; a mis-converted model (a box transposed or scaled) matches
    none."""
    assert list(converted) == list(reference)
    compared = 0
    for patient_id, expected in reference.items():
        got = converted[patient_id]
        tail = max(1, len(expected) // 10)
        assert abs(len(got) - len(expected)) <= tail, patient_id
        missing = unmatched(expected, got, 1e-3 * RSNA_SIZE, 1e-3)
        assert missing <= tail, (patient_id, missing, len(expected))
        compared += len(expected) - missing
    assert compared > 0, "no box to compare"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_onnx_and_float_tflite_detect_what_the_savedmodel_detects(predictions, name):
    assert_same_detections(predictions["savedmodel"], predictions[name])


@pytest.mark.slow
def test_retinanet_onnx_and_tflite_detect_what_its_savedmodel_detects(retinanet_exported):
    scaling = read_json(retinanet_exported.export_json)["tflite_input"]
    # ResNet subtracts the channel means: the TFLite graph's input, done on the host
    np.testing.assert_allclose(scaling["scale"], [1.0] * 3, rtol=1e-5)
    np.testing.assert_allclose(scaling["offset"], [-123.68, -116.779, -103.939], atol=1e-3)
    found = predict_each(retinanet_exported)
    for name in ("onnx", "tflite"):
        assert_same_detections(found["savedmodel"], found[name])
    # int8: a round trip (an untrained model's quantized scores say nothing of its accuracy)
    int8 = det.BoxTable.of(found["tflite_int8"])
    assert len(int8.scores) > 0 and ((int8.scores >= 0) & (int8.scores <= 1)).all()


@pytest.mark.slow
def test_int8_tflite_scores_within_005_of_the_float_model(predictions):
    truth = det.read_labels(LABELS_CSV).subset(list(predictions["tflite"]))
    float_score = competition_score(truth, predictions["tflite"])
    int8_score = competition_score(truth, predictions["tflite_int8"])
    assert abs(int8_score - float_score) <= 0.05, (float_score, int8_score)
    # the tiny model scores near 0 either way, so also: int8 keeps the float model's best box
    for patient_id, expected in predictions["tflite"].items():
        got = predictions["tflite_int8"][patient_id]
        assert len(got) > 0
        np.testing.assert_allclose(got.scores[0], expected.scores[0], atol=0.02)


@pytest.mark.slow
def test_predict_tool_runs_the_onnx_file_with_tta(exported_formats, tmp_path):
    output = tmp_path / "onnx.csv"
    done = run_tool("predict", f"--model={exported_formats.onnx}", f"--input={SAMPLE_DICOMS}",
                    f"--output={output}", "--tta=hflip", "--progress=false")
    assert done.returncode == 0, done.stderr[-3000:]
    table = det.read_detections(output)
    assert len(table) == 16
    assert 0 < len(table.boxes) and (table.scores <= 1).all()


@pytest.mark.slow
def test_ensemble_tool_fuses_the_onnx_and_tflite_files(exported_formats, tmp_path):
    """``tfod-ensemble --models`` takes model files: its fused CSV is what fusing the two
    files' own predictions gives."""
    models = [exported_formats.onnx, exported_formats.tflite]
    output = tmp_path / "fused.csv"
    done = run_tool("ensemble", *(f"--models={path}" for path in models),
                    f"--input={SAMPLE_DICOMS}", f"--output={output}", "--noprogress")
    assert done.returncode == 0, done.stderr[-3000:]
    each = [infer.predict(path, SAMPLE_DICOMS, progress=False)[0] for path in models]
    expected = ensemble.fuse(each, sizes.sizes_of_inputs(SAMPLE_DICOMS)[0])
    fused = det.read_detections(output)
    assert sorted(fused) == sorted(expected)
    assert det.count_boxes(fused) == det.count_boxes(expected) > 0
    for patient_id, image in expected.items():
        assert unmatched(image, fused[patient_id], 1e-3, 1e-6) == 0, patient_id


@pytest.mark.slow
def test_a_model_file_outside_its_export_folder_is_refused(exported_formats, tmp_path):
    moved = tmp_path / "model.onnx"
    moved.write_bytes(exported_formats.onnx.read_bytes())
    with pytest.raises(BadInput, match="no pipeline.config beside the model file"):
        formats.load_model(moved)
    with pytest.raises(BadInput, match="does not exist"):
        formats.load_model(tmp_path / "missing.tflite")


@pytest.mark.slow
def test_encoded_serving_signature_takes_png_bytes(exported_formats):
    image = load_image_8bit(sorted(SAMPLE_DICOMS.glob("*.dcm"))[0])
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    serving = tf.saved_model.load(str(exported_formats.serving_saved_model))
    signature = serving.signatures["serving_default"]
    (input_name, spec), = signature.structured_input_signature[1].items()
    assert spec.dtype == tf.string
    outputs = signature(**{input_name: tf.constant([png.getvalue()])})
    assert all(name in outputs for name in DETECTION_OUTPUTS)
    model = ExportedModel(exported_formats.root)
    expected = model.raw(model.resize(image)[np.newaxis])
    count = int(expected["num_detections"][0])
    assert count > 0
    np.testing.assert_allclose(outputs["detection_scores"].numpy()[0, :count],
                               expected["detection_scores"][0, :count], atol=1e-4)
    np.testing.assert_allclose(outputs["detection_boxes"].numpy()[0, :count],
                               expected["detection_boxes"][0, :count], atol=1e-4)


@pytest.mark.parametrize("model", ["faster_rcnn_resnet50", "centernet_resnet50_fpn"])
@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_families_that_do_not_convert_are_refused_before_any_work(model, name,
                                                                    converted_sample, tmp_path):
    run = RunFolder(tmp_path / "run").create()  # a config, no checkpoint: nothing to build
    configs.build_config(model, converted_sample, 0, run.pipeline_config, image_size=128)
    with pytest.raises(BadInput, match=f"cannot export .* to {name}: .*supports ssd models"):
        export.export(run.root, "latest", formats=[formats.SAVEDMODEL, name])
    assert not run.exported.exists()


def test_refusal_is_one_line_from_the_tool(converted_sample, tmp_path):
    run = RunFolder(tmp_path / "run").create()
    configs.build_config("faster_rcnn_resnet50", converted_sample, 0, run.pipeline_config,
                         image_size=128)
    line = one_line_error(run_tool("export", f"--run_dir={run.root}", "--format=onnx"))
    assert "--format: cannot export faster_rcnn to onnx: tf2onnx" in line
