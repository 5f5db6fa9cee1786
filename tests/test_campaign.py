"""Cross-validation campaigns (tfod-train --folds), out-of-fold assembly and early stopping.

The slow tests train for real on the shared sample (ssd_mobilenet_v2, 128 px, batch 2, CPU):
a 2-fold campaign of 20 steps, run twice (the rerun must train nothing), and a single run with
a learning rate of 0 that early stopping must end before its steps.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS_CSV
from tfod import detections as det
from tfod.data.convert import convert
from tfod.runfolder import RunFolder, list_checkpoints, read_json, read_status, write_json
from tfod.scoring import metric
from tfod.train import campaign, cv
from tfod.train.launch import LaunchError

REPO = Path(__file__).resolve().parents[1]
MODEL = "ssd_mobilenet_v2"
TINY = ["--image_size=128", "--batch_size=2", "--max_restarts=0", "--trainer_timeout=120",
        "--eval_device=cpu"]
ZERO_LEARNING_RATE = [
    "--override=train_config.optimizer.momentum_optimizer.learning_rate."
    f"cosine_decay_learning_rate.{field}=0" for field in ("learning_rate_base",
                                                           "warmup_learning_rate")]


def tool(*args, timeout=1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def campaign_command(data_dir, run_root) -> list[str]:
    return ["tools.train", f"--model={MODEL}", f"--data_dir={data_dir}", "--folds=all",
            f"--run_root={run_root}", "--num_steps=20", "--checkpoint_every=10",
            "--log_every=10", *TINY]


@pytest.fixture(scope="module")
def two_folds(converted_sample, tmp_path_factory):
    """A 2-fold campaign, then the same command again."""
    run_root = tmp_path_factory.mktemp("campaign") / "runs"
    first = tool(*campaign_command(converted_sample, run_root))
    runs = [RunFolder(campaign.fold_run_dir(run_root, MODEL, k)) for k in (0, 1)]
    before = {run.root.name: (run.launch_json.stat().st_mtime_ns, list_checkpoints(run.root))
              for run in runs if run.launch_json.exists()}
    second = tool(*campaign_command(converted_sample, run_root))
    return {"root": run_root, "runs": runs, "first": first, "second": second, "before": before,
            "cv": campaign.cv_dir(run_root, MODEL), "data": converted_sample}


@pytest.mark.slow
def test_campaign_trains_every_fold_into_its_run_folder(two_folds):
    first = two_folds["first"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for fold, run in enumerate(two_folds["runs"]):
        status = read_status(run)
        assert (status["state"], status["step"]) == ("finished", 20)
        best = read_json(run.best_checkpoint)
        assert best["step"] in (10, 20) and run.val_detections().exists()
        launched = read_json(run.launch_json)
        assert launched["flags"]["fold"] == fold and launched["flags"]["folds"] == "all"
    assert "[cv 1/2 done, fold 1]" in first.stdout  # the campaign's progress
    assert "OOF:" in first.stdout


@pytest.mark.slow
def test_oof_holds_each_image_exactly_once_in_original_pixels(two_folds):
    folds_table = (two_folds["data"] / "folds.csv").read_text().splitlines()
    converted = {line.split(",")[0] for line in folds_table[1:]}
    assert len(converted) == 16
    oof = det.read_detections(two_folds["cv"] / cv.OOF_CSV)  # refuses nothing; ids in order
    assert sorted(oof) == sorted(converted)
    per_fold = [list(det.read_detections(run.val_detections())) for run in two_folds["runs"]]
    assert sorted(per_fold[0] + per_fold[1]) == sorted(converted)  # disjoint and complete
    assert not set(per_fold[0]) & set(per_fold[1])
    boxes = np.concatenate([oof[i].boxes for i in oof])
    if len(boxes):  # the evaluator's boxes are in the 1024-px frame of the labels
        assert boxes[:, 0].max() > 128 or boxes[:, 2].max() > 128


@pytest.mark.slow
def test_cv_json_reports_each_fold_and_one_common_threshold(two_folds):
    summary = json.loads((two_folds["cv"] / cv.CV_JSON).read_text())
    assert [fold["fold"] for fold in summary["folds"]] == [0, 1]
    for fold, run in zip(summary["folds"], two_folds["runs"], strict=True):
        best = read_json(run.best_checkpoint)
        assert fold["best_step"] == best["step"]
        assert fold["threshold"] == best["threshold"]
        assert fold["images"] == 8
    oof = summary["oof"]
    assert oof["images"] == 16 and oof["threshold"] in metric.MIN_SCORES.tolist()
    truth = det.read_labels(LABELS_CSV)
    detections = det.read_detections(two_folds["cv"] / cv.OOF_CSV)
    recomputed = metric.competition_score({i: truth[i] for i in detections}, detections,
                                          min_score=oof["threshold"])
    assert oof["score"] == pytest.approx(recomputed)
    assert (two_folds["cv"] / cv.CV_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rerun_of_a_finished_campaign_trains_nothing(two_folds):
    second = two_folds["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("finished already: skipped") == 2
    assert "started (pid" not in second.stdout
    for run in two_folds["runs"]:
        mtime, checkpoints = two_folds["before"][run.root.name]
        assert run.launch_json.stat().st_mtime_ns == mtime
        assert list_checkpoints(run.root) == checkpoints


@pytest.mark.slow
def test_tfod_evaluate_scores_every_fold_at_once_from_oof(two_folds, tmp_path):
    done = tool("tools.evaluate", f"--detections={two_folds['cv'] / cv.OOF_CSV}",
                f"--labels_csv={LABELS_CSV}", f"--output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images_total"] == 16


@pytest.mark.slow
def test_patience_stops_a_run_that_cannot_improve_and_keeps_the_best(converted_sample, tmp_path):
    run = RunFolder(tmp_path / "run")
    # Far more steps than the evaluator needs to start and score 3 checkpoints on a busy
    # machine, and every checkpoint kept until then (the evaluator scores them in order).
    num_steps, every = 3000, 50
    command = ["tools.train", f"--model={MODEL}", f"--data_dir={converted_sample}", "--fold=0",
               f"--num_steps={num_steps}", f"--checkpoint_every={every}", f"--log_every={every}",
               "--max_to_keep=20", "--patience=2", f"--run_dir={run.root}", *TINY,
               *ZERO_LEARNING_RATE]
    done = tool(*command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = read_status(run)
    assert status["state"] == "finished" and status["stopped_early"] is True
    print(f"early stopping: stopped at step {status['step']} of {num_steps}")
    assert 3 * every <= status["step"] < num_steps
    assert "did not improve" in status["reason"] and "stopped early" in done.stdout
    assert read_json(run.stop_request)["reason"] == status["reason"]
    best = read_json(run.best_checkpoint)
    assert best["step"] == every  # nothing beats the first evaluation at a learning rate of 0
    assert (run.best_dir / f"{best['checkpoint']}.index").exists()
    assert "early stopping" in run.eval_log.read_text()
    again = tool(*command)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert read_status(run)["step"] == status["step"]  # the rerun trained nothing


# --------------------------------------------------------------------- plans, no training


@pytest.fixture(scope="module")
def five_folds(tmp_path_factory):
    """The real sample converted into 5 folds (the dry run needs only the folder)."""
    from tests.conftest import CLASS_INFO_CSV, SAMPLE_DICOMS

    output_dir = tmp_path_factory.mktemp("five_folds")
    convert(SAMPLE_DICOMS, output_dir, LABELS_CSV, CLASS_INFO_CSV, num_folds=5, seed=42,
            workers=1, progress=False)
    return output_dir


def plan_rows(stdout: str) -> list[tuple[int, int, int, str]]:
    """(lane, order, fold, gpus) of the campaign plan's lines."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["lane"] and parts[2].startswith("#"):
            rows.append((int(parts[1]), int(parts[2][1:]), int(parts[4]), parts[6]))
    return rows


def test_dry_run_plans_five_folds_on_two_gpus_in_parallel(five_folds, tmp_path):
    done = tool("tools.train", f"--model={MODEL}", f"--data_dir={five_folds}", "--folds=all",
                f"--run_root={tmp_path / 'runs'}", "--num_steps=100", "--gpus=0,1",
                "--parallel_folds", "--patience=3", "--dry_run", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert plan_rows(done.stdout) == [(0, 1, 0, "0"), (0, 2, 2, "0"), (0, 3, 4, "0"),
                                      (1, 1, 1, "1"), (1, 2, 3, "1")]
    trainer_lines = [line for line in done.stdout.splitlines() if "[train]" in line]
    assert [line.split("CUDA_VISIBLE_DEVICES=")[1][0] for line in trainer_lines] == list("01010")
    for fold in range(5):
        assert f"--run_dir {tmp_path / 'runs'}/ssd_mobilenet_v2-fold{fold}" in done.stdout
    assert done.stdout.count("early stopping: patience 3, min_delta 0.0") == 5
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_plan_folds_sequential_and_parallel(tmp_path):
    sequential = campaign.plan_folds([0, 1, 2], tmp_path, MODEL, gpus="0,1")
    assert [(f.fold, f.gpus, f.lane, f.order) for f in sequential] == [
        (0, "0,1", 0, 0), (1, "0,1", 0, 1), (2, "0,1", 0, 2)]
    parallel = campaign.plan_folds([3, 1, 4], tmp_path, MODEL, gpus="2,5", parallel=True)
    assert [(f.fold, f.gpus, f.lane, f.order) for f in parallel] == [
        (3, "2", 0, 0), (1, "5", 1, 0), (4, "2", 0, 1)]
    assert parallel[0].run_dir == tmp_path / f"{MODEL}-fold3"
    with pytest.raises(LaunchError, match="by index"):
        campaign.plan_folds([0, 1], tmp_path, MODEL, gpus="", parallel=True)


def test_parse_folds_reads_the_converted_folder(converted_sample):
    assert campaign.parse_folds("all", converted_sample) == [0, 1]
    assert campaign.parse_folds("1", converted_sample) == [1]
    for bad in ("0,2", "0,0", "x", ""):
        with pytest.raises(LaunchError):
            campaign.parse_folds(bad, converted_sample)


def fake_fold(root: Path, fold: int, images: dict, step: int = 20, **status) -> RunFolder:
    """A run folder as a finished, evaluated fold leaves it (no training)."""
    run = RunFolder(root / f"{MODEL}-fold{fold}").create()
    det.write_detections(images, run.val_detections())
    write_json(run.best_checkpoint, {"checkpoint": "ckpt-3", "step": step, "score": 0.25,
                                     "threshold": 0.5})
    write_json(run.evaluated, {"ckpt-3": {"step": step, "metrics": {"rsna/score": 0.25}}})
    write_json(run.status, {"state": "finished", "step": step, "target": 20, **status})
    return run


def test_fold_state_finished_resume_new(tmp_path):
    empty = {"a": det.ImageBoxes.empty()}
    finished = fake_fold(tmp_path, 0, empty)
    assert campaign.fold_state(finished, 20) == "finished"
    assert campaign.fold_state(finished, 40) == "resume"  # more steps asked: it goes on
    stopped = fake_fold(tmp_path, 1, empty, step=10, stopped_early=True)
    assert campaign.fold_state(stopped, 40) == "finished"
    write_json(stopped.evaluated, {})
    assert campaign.fold_state(stopped, 40) == "resume"  # its last checkpoint not evaluated
    assert campaign.fold_state(RunFolder(tmp_path / "none"), 20) == "new"


def test_assemble_oof_refuses_an_image_in_two_folds_and_a_fold_without_best(tmp_path):
    truth = det.read_labels(LABELS_CSV)
    ids = sorted(truth)[:3]
    box = det.ImageBoxes([[100, 100, 200, 200]], [0.9])
    first = fake_fold(tmp_path, 0, {ids[0]: box, ids[1]: det.ImageBoxes.empty()})
    second = fake_fold(tmp_path, 1, {ids[1]: box})
    with pytest.raises(cv.OofError, match="earlier fold"):
        cv.assemble_oof([first.root, second.root], LABELS_CSV, tmp_path / "cv")
    second.best_checkpoint.unlink()
    with pytest.raises(cv.OofError, match="no evaluated best checkpoint"):
        cv.assemble_oof([first.root, second.root], LABELS_CSV, tmp_path / "cv")
    third = fake_fold(tmp_path, 2, {ids[2]: det.ImageBoxes.empty()})
    summary = cv.assemble_oof([first.root, third.root], LABELS_CSV, tmp_path / "cv")
    assert summary["oof"]["images"] == 3 and [f["fold"] for f in summary["folds"]] == [0, 2]
    written = (tmp_path / "cv" / cv.OOF_CSV).read_text().splitlines()
    assert written[1:] == [f"{ids[0]},100.0,100.0,200.0,200.0,0.9", f"{ids[1]},,,,,",
                           f"{ids[2]},,,,,"]


def test_folds_that_make_no_out_of_fold_set_are_one_line_of_bad_input(converted_sample,
                                                                      tmp_path):
    image = sorted(det.read_labels(LABELS_CSV))[0]
    box = det.ImageBoxes([[100, 100, 200, 200]], [0.9])
    for fold in (0, 1):  # both finished folds claim the same image
        fake_fold(tmp_path, fold, {image: box})
    done = tool(*campaign_command(converted_sample, tmp_path))
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "earlier fold" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
