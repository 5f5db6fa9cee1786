"""Every file a stage writes appears whole or not at all (tfod.runfolder.atomic_write).

A real ``kill -9`` lands on a real process the moment its output (or the output's temporary
file) appears in the folder: the output is then absent or complete. A full disk (a file size
limit, ``ulimit -f``) leaves an earlier complete output, and its sidecar, as they were.
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS_CSV, REPO, SAMPLE_DICOMS
from conftest import TOOL_ENV as ENV

from tfod import detections as det
from tfod.infer import predict as infer
from tfod.runfolder import RunFolder, atomic_write, write_json
from tfod.train import cv


def synthetic_detections(ids, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {i: det.ImageBoxes(np.c_[rng.uniform(0, 800, (3, 2)), rng.uniform(20, 200, (3, 2))],
                              rng.uniform(0, 1, 3)) for i in ids}


def tool_command(tool: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"tools.{tool}", *args]


def kill_when_written(command: list[str], output: Path, timeout: float = 600) -> None:
    """Run ``command`` and ``kill -9`` it as soon as ``output`` or a temporary file for it
    (``.<name>.*``) appears in ``output``'s folder."""
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not any(name == output.name or name.startswith(f".{output.name}.")
                      for name in os.listdir(output.parent)):
            if process.poll() is not None:
                raise AssertionError(f"exit {process.returncode} before {output.name} appeared: "
                                     f"{process.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, f"{output.name} did not appear"
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


def with_file_size_limit(limit: int):
    """``preexec_fn`` of a process that cannot write a file beyond ``limit`` bytes (a full
    disk, as ``ulimit -f``)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def hidden_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_atomic_write_replaces_whole_or_keeps_the_earlier_file(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("earlier\n")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_write(path) as stream:
            stream.write("half")
            raise RuntimeError("midway")
    assert path.read_text() == "earlier\n" and hidden_files(tmp_path) == []
    with pytest.raises(ValueError, match="bad"):
        with atomic_write(path, check=lambda written: (_ for _ in ()).throw(ValueError("bad"))):
            pass
    assert path.read_text() == "earlier\n" and hidden_files(tmp_path) == []
    seen = []
    with atomic_write(path, check=lambda written: seen.append(written.read_text())) as stream:
        stream.write("new\n")
    assert path.read_text() == "new\n" and seen == ["new\n"] and hidden_files(tmp_path) == []
    umask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "mode.json") as stream:
            stream.write("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "mode.json").stat().st_mode & 0o777 == 0o640  # as open() would make it


@pytest.fixture(scope="module")
def two_detection_files(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    folder = tmp_path_factory.mktemp("ensemble-inputs")
    ids = [f"image{i:05d}" for i in range(8000)]
    files = folder / "a.csv", folder / "b.csv"
    for seed, path in enumerate(files):
        det.write_detections(synthetic_detections(ids, seed), path)
    return *files, ids


def test_ensemble_killed_while_writing_leaves_no_partial_fused_csv(two_detection_files,
                                                                   tmp_path):
    first, second, ids = two_detection_files
    fused = tmp_path / "fused.csv"
    kill_when_written(tool_command("ensemble", f"--detections={first}",
                                   f"--detections={second}", f"--output={fused}",
                                   "--noprogress"), fused)
    assert not fused.exists() or det.read_detections(fused).ids == ids


def test_ensemble_on_a_full_disk_keeps_the_earlier_fused_csv(two_detection_files, tmp_path):
    first, second, ids = two_detection_files
    fused = tmp_path / "fused.csv"
    command = tool_command("ensemble", f"--detections={first}", f"--detections={second}",
                           f"--output={fused}", "--noprogress")
    assert subprocess.run(command, cwd=REPO, env=ENV, capture_output=True).returncode == 0
    earlier = fused.read_bytes()
    assert det.read_detections(fused).ids == ids
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                          preexec_fn=with_file_size_limit(len(earlier) // 2))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "File too large" in done.stderr and "Traceback" not in done.stderr
    assert fused.read_bytes() == earlier
    assert hidden_files(tmp_path) == []


def fake_fold(root: Path, fold: int, detections: dict) -> RunFolder:
    """A run folder as a finished, evaluated fold leaves it (no training)."""
    run = RunFolder(root / f"model-fold{fold}").create()
    det.write_detections(detections, run.val_detections())
    write_json(run.best_checkpoint, {"checkpoint": "ckpt-3", "step": 20, "score": 0.25,
                                     "threshold": 0.5})
    return run


def test_campaign_killed_while_writing_oof_leaves_no_partial_oof_csv(tmp_path):
    ids = list(det.read_labels(LABELS_CSV).ids)
    half = len(ids) // 2
    runs = [fake_fold(tmp_path, 0, synthetic_detections(ids[:half], 0)),
            fake_fold(tmp_path, 1, synthetic_detections(ids[half:], 1))]
    output_dir = tmp_path / "cv"
    output_dir.mkdir()
    assemble = ("import sys; from tfod.train import cv; "
                "cv.assemble_oof(sys.argv[1:3], sys.argv[3], sys.argv[4])")
    kill_when_written([sys.executable, "-c", assemble, *(str(run.root) for run in runs),
                       str(LABELS_CSV), str(output_dir)], output_dir / cv.OOF_CSV)
    oof = output_dir / cv.OOF_CSV
    assert not oof.exists() or sorted(det.read_detections(oof).ids) == sorted(ids)
    assert not (output_dir / cv.CV_JSON).exists()  # written after oof.csv


@pytest.mark.slow
def test_predict_killed_while_writing_leaves_no_partial_csv(trained_run, exported_best,
                                                            tmp_path):
    output = tmp_path / "pred.csv"
    kill_when_written(tool_command("predict", f"--model={trained_run.root}",
                                   f"--input={SAMPLE_DICOMS}", f"--output={output}",
                                   "--min_score=0", "--noprogress"), output)
    if output.exists():
        assert len(det.read_detections(output).ids) == 16
    assert not (tmp_path / "pred.csv.skipped.json").exists() or output.exists()


@pytest.mark.slow
def test_predict_on_a_full_disk_keeps_the_earlier_csv_and_its_sidecar(
        trained_run, exported_best, tmp_path):
    output = tmp_path / "pred.csv"
    listing = tmp_path / "inputs.txt"
    dicoms = sorted(SAMPLE_DICOMS.glob("*.dcm"))
    (tmp_path / "truncated.dcm").write_bytes(dicoms[0].read_bytes()[:300])
    listing.write_text("\n".join([*map(str, dicoms[1:]), "truncated.dcm"]))
    command = tool_command("predict", f"--model={trained_run.root}", f"--output={output}",
                           "--min_score=0", "--noprogress")
    done = subprocess.run([*command, f"--input={SAMPLE_DICOMS}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    earlier, sidecar = output.read_bytes(), infer.skipped_path(output).read_bytes()
    assert len(det.read_detections(output).ids) == 16 and json.loads(sidecar) == []
    done = subprocess.run([*command, f"--input={listing}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True,
                          preexec_fn=with_file_size_limit(len(earlier) // 2))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "File too large" in done.stderr
    assert output.read_bytes() == earlier
    assert infer.skipped_path(output).read_bytes() == sidecar  # not the new run's sidecar
    assert hidden_files(tmp_path) == []


@pytest.mark.parametrize("test_ids", ["patientId\nimage00000\nimage00000\n",  # repeated id
                                      "patientId\nimage00000\n",  # not the detected images
                                      "id\nimage00000\n"])  # no patientId column
def test_ensemble_checks_every_input_before_writing_anything(two_detection_files, tmp_path,
                                                             test_ids):
    first, second, _ = two_detection_files
    (tmp_path / "test_ids.csv").write_text(test_ids)
    done = subprocess.run(tool_command(
        "ensemble", f"--detections={first}", f"--detections={second}", "--noprogress",
        f"--output={tmp_path / 'fused.csv'}", f"--submission={tmp_path / 'submission.csv'}",
        f"--test_ids={tmp_path / 'test_ids.csv'}"), cwd=REPO, env=ENV, capture_output=True,
        text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["test_ids.csv"]
