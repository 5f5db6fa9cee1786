"""The training layer's own contracts: no patched OD API/TensorFlow internals, boxes in each
image's original frame (non-square), stop requests, the multi-worker TF_CONFIG."""
import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import prepare_run
from google.protobuf import text_format
from PIL import Image

import tfod.compat  # noqa: F401
from tfod.data import records
from tfod.runfolder import (
    RunFolder,
    list_checkpoints,
    read_status,
    read_stop_request,
    request_stop,
)
from tfod.train.evaluator import CheckpointScorer, eval_images
from tfod.train.multiworker import worker_tf_configs

# isort: split
from object_detection.utils import config_util

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
PATCHED_ROOTS = ("object_detection", "tensorflow", "tf_slim")
# tfod/compat.py's job is the documented stack fixes: it puts back names that newer libraries
# removed (tf-slim's control_flow_ops names), only where they are missing.
ALLOWED = {"tfod/compat.py"}


# ------------------------------------------------------------------- no patched internals


def _module_aliases(tree: ast.AST) -> set[str]:
    """Names bound to OD API / TensorFlow modules (or their members) by the imports of a file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name.split(".")[0]) for a in node.names
                      if a.name.split(".")[0] in PATCHED_ROOTS}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in \
                PATCHED_ROOTS:
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def patches(source: str) -> list[str]:
    """Assignments (and ``setattr``/``del``) to attributes or items of imported OD API or
    TensorFlow modules in ``source``, as ``line: code``."""
    tree = ast.parse(source)
    modules = _module_aliases(tree)
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("setattr", "delattr") and node.args:
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for target in targets:
            if isinstance(target, ast.Attribute | ast.Subscript) and _root(target) in modules:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_patch_scan_finds_patches():
    assert patches("from object_detection import model_lib_v2\nmodel_lib_v2.LOG_EVERY = 1\n")
    assert patches("from object_detection import eval_util as e\ne.METRICS['x'] = 1\n")
    assert patches("import tensorflow as tf\ntf.compat.v2.train.CheckpointManager = object\n")
    assert patches("import tensorflow as tf\nsetattr(tf.train, 'Checkpoint', None)\n")
    assert not patches("import tensorflow as tf\nmodel = tf.keras.Model()\nmodel.x = 1\n")


def test_no_tfod_module_patches_od_api_or_tensorflow():
    found = {}
    for path in sorted((REPO / "tfod").rglob("*.py")):
        name = str(path.relative_to(REPO))
        if name not in ALLOWED and (hits := patches(path.read_text())):
            found[name] = hits
    assert not found, f"tfod assigns to OD API / TensorFlow modules: {found}"


# ------------------------------------------------------------- boxes in the original frame

# Two non-square records. "wide" holds a 300 x 200 (width x height) image whose original was
# 600 x 400; "tall" a 200 x 300 image of a record without the original-size keys.
# Each has one off-centre box, given here in its original's pixels (x, y, w, h).
CASES = {
    "wide": {"record": (300, 200), "original": (600, 400), "box": (360.0, 80.0, 120.0, 200.0)},
    "tall": {"record": (200, 300), "original": None, "box": (20.0, 150.0, 60.0, 90.0)},
}


def _example(source_id: str, record_size, original_size, box_xywh) -> bytes:
    width, height = record_size
    frame = original_size or record_size
    pixels = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG")
    image = records.RecordImage(stream.getvalue(), "jpeg", height, width, source_id, "0" * 64)
    x, y, w, h = box_xywh
    box = [y / frame[1], x / frame[0], (y + h) / frame[1], (x + w) / frame[0]]
    example = tf.train.Example.FromString(records.encode_example(image, [box]))
    feature = example.features.feature
    for key in (records.ORIGINAL_WIDTH_KEY, records.ORIGINAL_HEIGHT_KEY):
        if key in feature:  # written by the converter; absent in older records
            del feature[key]
    if original_size:
        feature[records.ORIGINAL_WIDTH_KEY].int64_list.value[:] = [original_size[0]]
        feature[records.ORIGINAL_HEIGHT_KEY].int64_list.value[:] = [original_size[1]]
    return example.SerializeToString()


@pytest.fixture(scope="module")
def non_square_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("non_square")
    record = folder / "eval.tfrecord"
    with tf.io.TFRecordWriter(str(record)) as writer:
        for name, case in CASES.items():
            writer.write(_example(name, case["record"], case["original"], case["box"]))
    label_map = folder / "label_map.pbtxt"
    label_map.write_text("item { id: 1 name: 'opacity' }\n")
    configs = config_util.get_configs_from_pipeline_file(
        str(DATA / "ssd_mobilenet_v2_minimal.config"))
    for reader in (configs["train_input_config"], configs["eval_input_configs"][0]):
        reader.label_map_path = str(label_map)
        reader.tf_record_input_reader.input_path[:] = [str(record)]
    pipeline = folder / "pipeline.config"
    pipeline.write_text(text_format.MessageToString(
        config_util.create_pipeline_proto_from_configs(configs)))
    return pipeline, RunFolder(folder / "run").create()


def test_eval_images_read_each_original_size_width_first(non_square_run):
    pipeline, _ = non_square_run
    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    images = dict(eval_images(configs["eval_input_configs"][0]).values())
    assert images == {"wide": (600, 400), "tall": (200, 300)}


def test_evaluator_boxes_are_in_each_non_square_original_frame(non_square_run):
    pipeline, run = non_square_run
    scorer = CheckpointScorer(pipeline, run)
    metrics = scorer.evaluate_model()  # untrained weights: the ground truth path is the point
    assert metrics["rsna/images"] == 2
    for name, case in CASES.items():
        np.testing.assert_allclose(scorer.accumulator.truth[name].boxes, [case["box"]],
                                   atol=0.01, err_msg=name)
        width, height = case["original"] or case["record"]
        found = scorer.accumulator.detections[name].boxes
        assert len(found) and (found[:, 0] + found[:, 2] <= width + 1e-3).all()
        assert (found[:, 1] + found[:, 3] <= height + 1e-3).all()


# ------------------------------------------------------------------------- stop requests


def test_stop_request_round_trip(tmp_path):
    run = RunFolder(tmp_path).create()
    assert read_stop_request(run) is None
    request_stop(run, "no better rsna/score in 3 evaluations")
    assert read_stop_request(run) == "no better rsna/score in 3 evaluations"
    assert run.stop_request.name == "stop_request.json"


def _train(pipeline: Path, run: RunFolder, **settings) -> subprocess.CompletedProcess:
    prepare_run(run, pipeline, **settings)
    command = [sys.executable, "-m", "tfod.train", "train", "--run_dir", str(run.root)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_a_stop_request_saves_finishes_and_a_rerun_trains_nothing(converted_sample, tmp_path):
    from tfod.config import pipeline as configs

    pipeline = configs.build_config("ssd_mobilenet_v2", converted_sample, 0,
                                    tmp_path / "pipeline.config", image_size=128, batch_size=2,
                                    num_steps=20)
    run = RunFolder(tmp_path / "run").create()
    request_stop(run, "patience: no better rsna/score in 2 evaluations")
    done = _train(pipeline, run, checkpoint_every=10, log_every=10)
    assert done.returncode == 0, done.stderr
    assert "stop requested at step 10: patience" in done.stderr
    assert [c.step for c in list_checkpoints(run.root)] == [0, 10]
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == 10
    assert status["stopped_early"] is True and status["reason"].startswith("patience")
    again = _train(pipeline, run, checkpoint_every=10)
    assert again.returncode == 0, again.stderr
    assert "was stopped early (patience" in again.stderr and "nothing to train" in again.stderr
    assert [c.step for c in list_checkpoints(run.root)] == [0, 10]


@pytest.mark.slow
def test_train_adds_given_hooks_after_the_default_ones(converted_sample, tmp_path):
    from tfod.config import pipeline as configs
    from tfod.train.hooks import Hook
    from tfod.train.settings import TrainSettings
    from tfod.train.trainer import train

    class SeesSavedCheckpoints(Hook):
        """Runs after the saver: each step it sees is already a checkpoint."""

        def __init__(self):
            self.seen = []

        def after_step(self, trainer):
            self.seen.append((trainer.step, [c.step for c in list_checkpoints(trainer.run.root)]))

    run = RunFolder(tmp_path / "run").create()
    configs.build_config("ssd_mobilenet_v2", converted_sample, 0, run.pipeline_config,
                         image_size=128, batch_size=2, num_steps=4)
    hook = SeesSavedCheckpoints()
    assert train(run.root, TrainSettings(num_steps=4, checkpoint_every=2), hooks=[hook]) == 4
    assert hook.seen == [(2, [0, 2]), (4, [0, 2, 4])]


# ---------------------------------------------------------------------------- TF_CONFIG


def test_worker_tf_configs_give_each_worker_its_task_in_one_cluster():
    configs = [json.loads(text) for text in worker_tf_configs(3, "10.0.0.5", 2000)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == {"worker": ["10.0.0.5:2000", "10.0.0.5:2001", "10.0.0.5:2002"]}
               for c in configs)
    with pytest.raises(ValueError):
        worker_tf_configs(0)
