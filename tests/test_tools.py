"""Every tool as a user starts it: ``--help`` lists its flags, and each kind of failure has its
exit code (bad input or flag 2, failed run 1) with one ``error:`` line and no traceback."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
from absl import flags
from conftest import LABELS_CSV, REPO, SAMPLE_DICOMS

from tfod import cli
from tfod.errors import BadInput, RunFailed

ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}

SCRIPTS = {"evaluate": "tfod-evaluate", "make_config": "tfod-config", "train": "tfod-train",
           "demo": "tfod-demo", "doctor": "tfod-doctor", "convert_rsna": "tfod-convert",
           "classify": "tfod-classify", "ensemble": "tfod-ensemble", "export": "tfod-export",
           "predict": "tfod-predict"}
TOOL_FLAGS = {
    "evaluate": ["detections", "labels_csv", "images", "box_scale", "dicom_dir", "gallery_limit",
                 "debug", "verbose"],
    "make_config": ["model", "data_dir", "fold", "override", "output", "list_models", "debug"],
    "train": ["model", "data_dir", "pipeline_config", "gpus", "backend", "dry_run", "debug",
              "checkpoint_every", "trainer_timeout", "patience", "num_workers"],
    "demo": ["output_dir", "num_steps", "image_size", "debug"],
    "doctor": ["quiet", "debug"],
    "convert_rsna": ["dicom_dir", "labels_csv", "output_dir", "num_folds", "strict", "debug"],
    "classify": ["mode", "data_dir", "run_dir", "input", "output", "debug"],
    "ensemble": ["detections", "method", "weights", "output", "submission", "fit", "debug"],
    "export": ["run_dir", "checkpoint", "output_dir", "debug"],
    "predict": ["model", "input", "output", "tta", "submission", "debug"],
}


def test_every_console_script_is_covered():
    installed = {point.name: point.module for point in
                 importlib.metadata.entry_points(group="console_scripts")
                 if point.name.startswith("tfod-")}
    assert installed == {script: f"tools.{tool}" for tool, script in SCRIPTS.items()}


def _run(argv, timeout=300):
    return subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _listed(flag_names, text):
    return [name for name in flag_names if f"--{name}" not in text and f"--[no]{name}" not in text]


@pytest.mark.parametrize("tool", sorted(TOOL_FLAGS))
def test_help_lists_the_tools_flags_under_python_m(tool):
    result = _run([sys.executable, "-m", f"tools.{tool}", "--help"])
    assert result.returncode == 0, result.stderr
    assert _listed(TOOL_FLAGS[tool], result.stdout) == []


@pytest.mark.parametrize("tool, script", [("evaluate", "tfod-evaluate"),
                                          ("make_config", "tfod-config")])
def test_help_lists_the_tools_flags_as_a_console_script(tool, script, tmp_path):
    """The wrapper setuptools writes: its main module is the wrapper, not the tool."""
    wrapper = tmp_path / script
    wrapper.write_text(f"import sys\nfrom tools.{tool} import run\nsys.exit(run())\n")
    result = _run([sys.executable, str(wrapper), "--help"])
    assert result.returncode == 0, result.stderr
    assert _listed(TOOL_FLAGS[tool], result.stdout) == []


def _error_lines(result):
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if ": error: " in line]


@pytest.mark.parametrize("tool, args, code, message", [
    ("evaluate", ["stray"], 2, "unexpected arguments: stray"),
    ("evaluate", [f"--labels_csv={LABELS_CSV}", "--detections=d.csv"], 2,
     "--output_dir is required"),
    ("evaluate", ["--detections=d.csv", f"--labels_csv={LABELS_CSV}", "--output_dir={tmp}/o",
                  "--box_scale=0"], 2, "flag --box_scale=0.0: must be a positive number"),
    ("evaluate", ["--threshold=2"], 2, "flag --threshold=2"),
    ("evaluate", ["--detections=no-such.csv", f"--labels_csv={LABELS_CSV}",
                  "--output_dir={tmp}/o"],
     2, "no-such.csv: no such file (--detections)"),
    ("make_config", ["--model=nope", "--output={tmp}/p.config"], 2, "flag --model=nope"),
    ("make_config", ["--model=ssd_mobilenet_v2", "--data_dir=no-such-folder",
                     "--output={tmp}/p.config"], 2, "no-such-folder: "),
    ("train", ["--output={tmp}/p.config"], 2, "Unknown command line flag 'output'"),
    ("train", ["--model=ssd_mobilenet_v2", "--pipeline_config={tmp}/p.config"], 2,
     "give either --model"),
    ("train", ["--learning_rate=fast"], 2, "flag --learning_rate=fast"),
    ("demo", ["--dicom_dir={tmp}", "--output_dir={tmp}/out"], 2, "no .dcm files"),
    ("convert_rsna", ["--dicom_dir={tmp}/none", f"--labels_csv={LABELS_CSV}",
                      "--output_dir={tmp}/out"], 2, "none"),
    ("classify", ["--mode=predict", "--model={tmp}/none", f"--input={SAMPLE_DICOMS}",
                  "--output={tmp}/p.csv"], 2, "none"),
    ("ensemble", ["--detections={tmp}/none.csv", "--output={tmp}/f.csv"], 2, "none.csv"),
    ("export", ["--run_dir={tmp}/none"], 2, "none"),
    ("predict", ["--model={tmp}/none", f"--input={SAMPLE_DICOMS}", "--output={tmp}/p.csv"], 2,
     "none"),
])
def test_exit_codes_and_one_error_line(tool, args, code, message, tmp_path):
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = _run([sys.executable, "-m", f"tools.{tool}", *args])
    assert result.returncode == code, result.stderr
    lines = _error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith(f"{SCRIPTS[tool]}: error: ")  # its name, also under python -m


def test_a_tool_that_works_exits_0():
    result = _run([sys.executable, "-m", "tools.doctor", "--quiet"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert _error_lines(result) == []


def _fails_with(error):
    def main(argv):
        raise error
    return main


@pytest.mark.parametrize("error, code, line", [
    (BadInput("bad value", "f.csv", 3), 2, "error: f.csv, row 3: bad value"),
    (RunFailed("stage 'train' failed: see logs"), 1, "error: stage 'train' failed: see logs"),
    (OSError("disk full"), 1, "error: OSError: disk full (--debug shows the traceback)"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
])
def test_the_runner_turns_each_failure_into_its_exit_code(error, code, line, capsys):
    flags.FLAGS(["tool"])
    try:
        assert cli.guarded(_fails_with(error))(["tool"]) == code
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err and "Traceback" not in err
