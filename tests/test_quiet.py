"""Quiet by default: tools print tfod's own lines; TensorFlow's INFO and WARNING lines go to the
tool's log file, or show with ``--verbose``. Real ``tfod-export`` and ``tfod-predict``
subprocesses on the session's trained run and export (``test_export``'s fixtures)."""
import re

import pytest
from conftest import SAMPLE_DICOMS, run_tool

# A TensorFlow, absl or OD API INFO/WARNING line: C++ (``2026-01-01 10:00:00.0: W tensorflow/``),
# absl (``W0101 10:00:00.0 ...``), TensorFlow's Python logger (``WARNING:tensorflow:``) or a
# Python warning (``file.py:12: UserWarning: ...``).
TF_LINE = re.compile(r"^(\d{4}-\d\d-\d\d [\d:.]+: [IW] |[IW]\d{4} \d\d:|(INFO|WARNING):\w+:"
                     r"|\S+:\d+: \w*Warning: )")


def tf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if TF_LINE.match(line)]


@pytest.mark.slow
def test_export_prints_only_its_own_lines_and_logs_the_rest(trained_run, tmp_path):
    done = run_tool("export", f"--run_dir={trained_run.root}",
                    f"--output_dir={tmp_path / 'exported'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert tf_lines(done.stdout + done.stderr) == [], done.stderr[-3000:]
    assert f"exported to {tmp_path / 'exported'}" in done.stdout
    log = (trained_run.logs / "tfod-export.log").read_text()
    assert re.search(r" WARNING tensorflow: ", log), log[:2000]  # what the console did not show


@pytest.mark.slow
def test_predict_is_quiet_unless_verbose(exported_best, tmp_path):
    common = [f"--model={exported_best}", f"--input={SAMPLE_DICOMS}", "--noprogress"]
    quiet = run_tool("predict", *common, f"--output={tmp_path / 'quiet.csv'}")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert tf_lines(quiet.stdout + quiet.stderr) == [], quiet.stderr[-3000:]
    assert quiet.stdout.startswith("16 image(s)")
    verbose = run_tool("predict", *common, f"--output={tmp_path / 'verbose.csv'}", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert tf_lines(verbose.stderr), verbose.stderr[-3000:]
    assert verbose.stdout == quiet.stdout.replace("quiet.csv", "verbose.csv")


def test_errors_show_without_verbose(tmp_path):
    done = run_tool("predict", f"--model={tmp_path}", f"--input={SAMPLE_DICOMS}",
                    f"--output={tmp_path / 'out.csv'}")
    assert done.returncode == 2 and ": error: " in done.stderr, done.stderr[-3000:]
    assert tf_lines(done.stderr) == [], done.stderr[-3000:]
