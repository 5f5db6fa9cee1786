"""tfod.train and tfod-train on the real sample: train, evaluate, kill, resume.

One module-scoped run serves the slow tests: ssd_mobilenet_v2 at 128 px, batch 2, 60 steps on
CPU with the local backend and the evaluator; the trainer is killed after its first trained
checkpoint (``--max_restarts=0``, so the launcher gives up and reports it), then the same
command is run again and resumes.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfod.compat  # noqa: F401
from tfod.config.request import ConfigRequest
from tfod.runfolder import Checkpoint, RunFolder, list_checkpoints, read_status
from tfod.train import launch
from tfod.train.evaluator import CompetitionMetricAccumulator, keep_best
from tfod.train.trainer import NAN_MESSAGE, finite_loss_step, steps_per_iteration

REPO = Path(__file__).resolve().parents[1]
NUM_STEPS, CHECKPOINT_EVERY = 60, 20


def train_command(data_dir: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tools.train", "--model=ssd_mobilenet_v2",
            f"--data_dir={data_dir}", "--fold=0", "--image_size=128", "--batch_size=2",
            f"--num_steps={NUM_STEPS}", f"--checkpoint_every={CHECKPOINT_EVERY}",
            "--log_every=20", "--max_restarts=0", "--trainer_timeout=120", f"--run_dir={run_dir}"]


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar in a folder of TensorBoard events: tag -> step -> value."""
    found: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    found.setdefault(value.tag, {})[event.step] = number
    return found


@pytest.fixture(scope="module")
def interrupted_run(converted_sample, tmp_path_factory):
    """Launch, SIGKILL the trainer after its first trained checkpoint, launch again."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run = RunFolder(run_dir)
    command = train_command(converted_sample, run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.time()
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (run_dir / "ckpt-2.index").exists(), 600, "a checkpoint after step 0")
        status = wait_for(lambda: read_status(run).get("state") == "running" and read_status(run),
                          60, "the trainer's heartbeat")
        os.kill(status["pid"], signal.SIGKILL)
        first_output, _ = first.communicate(timeout=600)
    finally:
        first.kill()
    killed_at = list_checkpoints(run_dir)[-1]
    first_seconds = time.time() - started
    started = time.time()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    return {
        "run": run, "killed_at": killed_at, "first_code": first.returncode,
        "first_output": first_output, "second": second, "command": command,
        "seconds": (first_seconds, time.time() - started),
    }


@pytest.mark.slow
def test_killed_trainer_is_reported_with_its_last_log_lines(interrupted_run):
    output = interrupted_run["first_output"]
    assert interrupted_run["first_code"] == 1, output
    assert "the trainer exited with code -9 (signal SIGKILL)" in output
    assert "no restart left (--max_restarts=0)" in output
    assert "Last lines of" in output and "train.log" in output
    assert interrupted_run["killed_at"].step in (20, 40)


@pytest.mark.slow
def test_rerun_resumes_from_the_checkpoint_and_stops_at_the_step_asked(interrupted_run):
    run, killed_at = interrupted_run["run"], interrupted_run["killed_at"]
    second = interrupted_run["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    log = run.train_log.read_text()
    assert f"resuming from {killed_at.name} at step {killed_at.step}, training to step " \
           f"{NUM_STEPS}" in log
    checkpoints = list_checkpoints(run.root)
    assert checkpoints[-1].step == NUM_STEPS
    steps = [c.step for c in checkpoints]
    assert steps == sorted(steps) and steps.count(NUM_STEPS) == 1
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == NUM_STEPS
    losses = scalars(run.train_events)["Loss/total_loss"]
    assert max(losses) == NUM_STEPS
    assert all(np.isfinite(list(losses.values())))


@pytest.mark.slow
def test_run_folder_holds_everything(interrupted_run):
    run = interrupted_run["run"]
    for path in (run.pipeline_config, run.launch_json, run.train_log, run.eval_log,
                 run.best_checkpoint, run.root / "checkpoint"):
        assert path.is_file(), path
    assert list(run.train_events.glob("events.out.tfevents.*"))
    assert list(run.eval_events.glob("events.out.tfevents.*"))
    record = json.loads(run.launch_json.read_text())
    assert record["backend"] == "local" and record["image"] is None
    assert record["commands"]["train"][1:4] == ["-m", "tfod.train", "train"]
    assert record["flags"]["model"] == "ssd_mobilenet_v2" and record["flags"]["fold"] == 0
    assert record["versions"]["tensorflow"] == tf.__version__
    assert "commit" in record["git"] and len(record["history"]) >= 1  # the killed launch
    assert "image_resizer" in run.pipeline_config.read_text()
    best = json.loads(run.best_checkpoint.read_text())
    assert set(best) >= {"checkpoint", "step", "score", "threshold"}
    assert (run.best_dir / f"{best['checkpoint']}.index").is_file()
    detections = run.val_detections(NUM_STEPS)
    assert detections.read_text().startswith("patientId,x,y,width,height,score")
    assert run.val_detections(best["step"]).read_bytes() == run.val_detections().read_bytes()


@pytest.mark.slow
def test_eval_events_hold_the_competition_metric_next_to_coco(interrupted_run):
    run = interrupted_run["run"]
    found = scalars(run.eval_events)
    assert NUM_STEPS in found["rsna/score"]
    assert NUM_STEPS in found["DetectionBoxes_Precision/mAP"]
    assert 0.0 <= found["rsna/score"][NUM_STEPS] <= 1.0
    assert 0.05 <= found["rsna/threshold"][NUM_STEPS] <= 0.95
    evaluated = json.loads(run.evaluated.read_text())
    assert sorted(entry["step"] for entry in evaluated.values()) == [20, 40, 60]


@pytest.mark.slow
def test_evaluator_exits_by_itself(interrupted_run):
    run = interrupted_run["run"]
    log = run.eval_log.read_text()
    assert "trainer state 'stopped' and every checkpoint evaluated" in log  # first launch
    assert f"evaluated the final step {NUM_STEPS}: evaluator done" in log  # second launch
    killed, resumed = interrupted_run["seconds"]
    print(f"launch times: killed run {killed:.0f} s, resumed run {resumed:.0f} s")


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing(interrupted_run):
    run, command = interrupted_run["run"], interrupted_run["command"]
    before = [c.name for c in list_checkpoints(run.root)]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert [c.name for c in list_checkpoints(run.root)] == before
    assert f"reaches the {NUM_STEPS} steps asked: nothing to train" in run.train_log.read_text()


@pytest.mark.slow
def test_a_changed_config_is_refused_on_an_existing_run(interrupted_run, converted_sample):
    run = interrupted_run["run"]
    request = ConfigRequest(model="ssd_mobilenet_v2", data_dir=str(converted_sample),
                                   fold=0, image_size=128, batch_size=4, num_steps=NUM_STEPS)
    with pytest.raises(launch.LaunchError, match="different pipeline.config") as error:
        launch.launch_run(request, run_dir=run.root, echo=lambda line: None)
    assert "batch_size: 4" in str(error.value)


@pytest.mark.slow
def test_the_runs_own_config_resumes_it_as_it_was(interrupted_run):
    run, lines = interrupted_run["run"], []
    request = ConfigRequest(pipeline_config=str(run.pipeline_config))
    assert launch.launch_run(request, dry_run=True, echo=lines.append) == 0
    plan = "\n".join(lines)
    assert f"run folder {run.root} (exists: resuming)" in plan  # the default --run_dir
    assert "identical to the run's: training resumes" in plan
    assert f"steps: {NUM_STEPS}, checkpoint every" in plan  # the run's config's steps


@pytest.mark.slow
def test_nan_loss_stops_training_and_is_reported_not_restarted(converted_sample, tmp_path):
    run = RunFolder(tmp_path / "nan")
    command = train_command(converted_sample, run.root) + [
        "--learning_rate=1e12", "--num_steps=20", "--checkpoint_every=10", "--max_restarts=2",
        "--eval_device=none"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "loss is not finite (NaN/Inf); not restarted" in done.stdout
    assert "the training loss is not finite near step" in done.stdout  # from the log's tail
    assert read_status(run)["state"] == "nan_loss"
    assert run.train_log.read_text().count("=== tfod launcher: train start") == 1


# ------------------------------------------------------------------------ fast unit tests


def test_nan_loss_fails_the_step_inside_a_multi_step_tf_function():
    def fake_step(value):
        return {"Loss/total_loss": value * 1.0}

    checked = finite_loss_step(fake_step)

    @tf.function
    def loop(value):  # like model_lib_v2._dist_train_step: results of early steps are dropped
        for _ in tf.range(3):
            checked(value)
        return checked(tf.constant(1.0))

    assert float(loop(tf.constant(2.0))["Loss/total_loss"]) == 1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=NAN_MESSAGE):
        loop(tf.constant(np.nan))
    with pytest.raises(tf.errors.InvalidArgumentError, match=NAN_MESSAGE):
        loop(tf.constant(np.inf))


@pytest.mark.parametrize("start,target,every", [
    (0, 60, 20), (0, 16, 6), (6, 16, 6), (12, 1000, 500), (0, 100000, 1000), (40, 60, 20),
    (0, 7, 1000)])
def test_steps_per_iteration_land_on_the_target_and_on_checkpoints(start, target, every):
    per = steps_per_iteration(start, target, every)
    assert 1 <= per <= 100
    assert (target - start) % per == 0 and every % per == 0


def _eval_dict(keys, shape, gt, n_gt, boxes, scores, n_det):
    return {"key": np.array(keys, dtype=np.int32),
            "original_image_spatial_shape": np.array([shape] * len(keys)),
            "groundtruth_boxes": np.array(gt, dtype=np.float32),
            "num_groundtruth_boxes": np.array(n_gt),
            "detection_boxes": np.array(boxes, dtype=np.float32),
            "detection_scores": np.array(scores, dtype=np.float32),
            "num_detections": np.array(n_det)}


def test_competition_metric_accumulator_scores_eval_dicts_in_original_pixels():
    evaluator = CompetitionMetricAccumulator(images={7: ("patient-a", (1024, 1024))})
    # image 7: one true box (padded to two rows), detected exactly with score 0.9 plus a 0.2 FP;
    # image 8: no box, one detection at 0.3. Boxes in pixels of a 256 x 256 record image.
    gt = [[[64, 32, 128, 96], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]]
    boxes = [[[64, 32, 128, 96], [0, 0, 50, 50]], [[10, 10, 60, 60], [0, 0, 0, 0]]]
    evaluator.add_eval_dict(_eval_dict([7, 8], (256, 256), gt, [1, 0], boxes,
                                       [[0.9, 0.2], [0.3, 0.0]], [2, 1]))
    metrics = evaluator.evaluate()
    assert metrics["rsna/score"] == 1.0 and 0.3 < metrics["rsna/threshold"] <= 0.9
    assert metrics["rsna/images"] == 2
    truth = evaluator.truth["patient-a"]
    np.testing.assert_allclose(truth.boxes, [[128, 256, 256, 256]])  # x, y, w, h at 1024 px
    assert len(evaluator.truth["8"]) == 0 and len(evaluator.detections["8"]) == 1
    assert evaluator.curve[0.05] == 0.25  # image 7: 1 TP + 1 FP -> 0.5; image 8: 0


def test_keep_best_copies_the_best_checkpoint_only(tmp_path):
    run = RunFolder(tmp_path).create()
    for name in ("ckpt-2", "ckpt-3"):
        for suffix in (".index", ".data-00000-of-00001"):
            (tmp_path / f"{name}{suffix}").write_text(name)
    assert keep_best(run, Checkpoint(tmp_path / "ckpt-2", 20), {"rsna/score": 0.1})
    assert not keep_best(run, Checkpoint(tmp_path / "ckpt-3", 40), {"rsna/score": 0.05})
    assert not keep_best(run, Checkpoint(tmp_path / "ckpt-3", 40), {"rsna/score": float("nan")})
    assert json.loads(run.best_checkpoint.read_text())["checkpoint"] == "ckpt-2"
    assert keep_best(run, Checkpoint(tmp_path / "ckpt-3", 40),
                     {"rsna/score": 0.2, "rsna/threshold": 0.4})
    assert sorted(p.name for p in run.best_dir.iterdir()) == [
        "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert json.loads(run.best_checkpoint.read_text())["step"] == 40
    # A better checkpoint that the trainer deleted before it was copied leaves the best alone.
    assert not keep_best(run, Checkpoint(tmp_path / "ckpt-4", 60), {"rsna/score": 0.9})
    assert sorted(p.name for p in run.best_dir.iterdir()) == [
        "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert json.loads(run.best_checkpoint.read_text())["checkpoint"] == "ckpt-3"
