"""tfod-export on a real run: best, latest and ckpt-N exports hold their checkpoint's weights.

One session-scoped run (ssd_mobilenet_v2 at 128 px, batch 2, 20 steps on the converted sample,
checkpoints ckpt-1..4 at steps 0 (no weights yet), 5, 10 and 15, the evaluator scoring
the last three) is trained through the
real trainer and evaluator (``python -m tfod.train``) and exported once with the tool; the
predict tests reuse both fixtures.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TRAINED_STEPS, one_line_error, run_tool

import tfod.compat  # noqa: F401

# isort: split
from object_detection.utils import config_util

from tfod.data.dicom import load_image_8bit
from tfod.infer import export
from tfod.infer.model import DETECTION_OUTPUTS
from tfod.runfolder import RunFolder, read_json

REPO = Path(__file__).resolve().parents[1]
# A variable whose value changes with every training step.
BOX_KERNEL = ("model/_box_predictor/_prediction_heads/box_encodings/0/_box_encoder_layers/0/"
              "kernel/.ATTRIBUTES/VARIABLE_VALUE")


NMS = "model.ssd.post_processing.batch_non_max_suppression"
FEW_BOXES = [f"{NMS}.max_detections_per_class=3", f"{NMS}.max_total_detections=3"]


@pytest.fixture(scope="session")
def exported_latest(trained_run, tmp_path_factory) -> Path:
    """The latest checkpoint exported by the library, with at most 3 boxes per image."""
    folder = tmp_path_factory.mktemp("latest") / "exported"
    export.export(trained_run.root, "latest", folder, FEW_BOXES)
    return folder


def saved_model_holds(saved_model: Path, checkpoint: Path) -> bool:
    """Whether the SavedModel has a variable equal to ``BOX_KERNEL`` of ``checkpoint``."""
    wanted = tf.train.load_variable(str(checkpoint), BOX_KERNEL)
    variables = str(saved_model / "variables" / "variables")
    return any(shape == list(wanted.shape)
               and np.array_equal(tf.train.load_variable(variables, name), wanted)
               for name, shape in tf.train.list_variables(variables))


@pytest.mark.slow
def test_best_latest_and_named_exports_hold_their_checkpoints_weights(
        trained_run, exported_best, exported_latest, tmp_path):
    best = read_json(trained_run.best_checkpoint)
    latest = export.pick_checkpoint(trained_run, "latest")
    assert latest.step == TRAINED_STEPS
    named = next(export.pick_checkpoint(trained_run, name)
                 for name in ("ckpt-2", "ckpt-3") if name not in (best["checkpoint"], latest.name))
    assert len({best["checkpoint"], latest.name, named.name}) == 3
    record = export.export(trained_run.root, named.name, tmp_path / named.name)
    assert (record["checkpoint"], record["step"]) == (named.name, named.step)
    exports = {best["checkpoint"]: exported_best, latest.name: exported_latest,
               named.name: tmp_path / named.name}
    checkpoints = {best["checkpoint"]: trained_run.best_dir / best["checkpoint"],
                   latest.name: latest.path, named.name: named.path}
    for name, folder in exports.items():
        holds = {other: saved_model_holds(folder / "saved_model", path)
                 for other, path in checkpoints.items()}
        assert holds == {other: other == name for other in checkpoints}, name


@pytest.mark.slow
def test_saved_model_detects_on_a_real_image(exported_best, sample_dicoms, trained_run):
    model = tf.saved_model.load(str(exported_best / "saved_model"))
    image = load_image_8bit(sample_dicoms[0])
    batch = tf.cast(tf.stack([tf.stack([image] * 3, axis=-1)] * 2), tf.float32)
    outputs = model.signatures["serving_default"](input_tensor=batch)
    assert set(DETECTION_OUTPUTS) <= set(outputs)
    assert outputs["detection_boxes"].shape[:2] == outputs["detection_scores"].shape
    assert outputs["num_detections"].shape == (2,)  # a batch of two
    record = json.loads((exported_best / "export.json").read_text())
    best = read_json(trained_run.best_checkpoint)
    evaluated = read_json(trained_run.evaluated)[best["checkpoint"]]["metrics"]
    assert record["checkpoint"] == best["checkpoint"] and record["step"] == best["step"]
    assert record["rsna/score"] == evaluated["rsna/score"] == best["score"]
    assert record["rsna/threshold"] == best["threshold"]
    assert record["image_size"] == {"height": 128, "width": 128}
    assert record["input_type"] == "float_image_tensor"
    assert record["versions"]["tensorflow"] == tf.__version__
    assert set(DETECTION_OUTPUTS) <= set(record["smoke_test"]["outputs"])
    assert (exported_best / "pipeline.config").is_file()


@pytest.mark.slow
def test_override_changes_the_exported_post_processing(exported_latest):
    record = json.loads((exported_latest / "export.json").read_text())
    assert record["overrides"] == FEW_BOXES
    assert record["smoke_test"]["num_detections"] <= 3
    written = config_util.get_configs_from_pipeline_file(str(exported_latest / "pipeline.config"))
    assert written["model"].ssd.post_processing.batch_non_max_suppression.max_total_detections == 3


@pytest.mark.slow
def test_best_without_an_evaluator_result_names_checkpoint_latest(trained_run, tmp_path):
    bare = RunFolder(tmp_path / "bare").create()
    shutil.copy(trained_run.pipeline_config, bare.pipeline_config)
    for file in trained_run.root.glob("ckpt-*"):
        shutil.copy(file, bare.root / file.name)
    shutil.copy(trained_run.root / "checkpoint", bare.root / "checkpoint")
    line = one_line_error(run_tool("export", f"--run_dir={bare.root}"))
    assert "--checkpoint=latest" in line and str(bare.root) in line
    assert not bare.exported.exists()


@pytest.mark.slow
def test_bad_checkpoint_override_and_folder_are_one_line_errors(trained_run, tmp_path):
    line = one_line_error(run_tool("export", f"--run_dir={trained_run.root}",
                                   "--checkpoint=ckpt-99"))
    assert "ckpt-99 does not exist" in line and "ckpt-3" in line
    line = one_line_error(run_tool("export", f"--run_dir={trained_run.root}",
                                   "--checkpoint=ckpt-1"))
    assert "ckpt-1 (step 0) holds no model weights" in line
    line = one_line_error(run_tool("export", f"--run_dir={trained_run.root}",
                                   "--config_override=model.ssd.no_such_field=1"))
    assert "no_such_field" in line
    line = one_line_error(run_tool("export", f"--run_dir={trained_run.root}",
                                   f"--config_override={NMS}.max_total_detections=3"))
    assert "cannot build the model with these overrides" in line
    assert "max_detections_per_class" in line
    line = one_line_error(run_tool("export", f"--run_dir={tmp_path}"))
    assert "not a run folder" in line
