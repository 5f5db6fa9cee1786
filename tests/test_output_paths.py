"""Output flags are checked before any work (tfod.cli.check_outputs), and one export at a time
writes an export folder (its lock), each export in its own staging folder."""
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO, one_line_error, run_tool
from conftest import TOOL_ENV as ENV

from tfod import cli
from tfod.errors import BadInput
from tfod.runfolder import read_json


def flag(name, value):
    return SimpleNamespace(name=name, value=str(value) if value is not None else None)


def test_check_outputs_refuses_what_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = [
        ([flag("output", tmp_path / "a.csv"), flag("submission", tmp_path / "x" / ".." / "a.csv")],
         [], "--submission and --output name the same path"),
        ([flag("output", tmp_path / "folder")], [], "is a folder .--output names a file"),
        ([], [flag("output_dir", tmp_path / "file")], "is a file .--output_dir names a folder"),
        ([flag("output", tmp_path / "file" / "deeper" / "a.csv")], [],
         r"file: cannot write the output folder \(a file is in the way\) \(--output\)"),
        ([flag("output", "/proc/tfod-test/a.csv")], [],  # refused even to root
         r"^/proc: cannot write the output folder \(.*\) \(--output\)"),
    ]
    for files, folders, message in cases:
        with pytest.raises(BadInput, match=message):
            cli.check_outputs(files=files, folders=folders)
    cli.check_outputs(files=[flag("output", tmp_path / "new" / "deeper" / "a.csv"),
                             flag("submission", None)],
                      folders=[flag("fit_dir", tmp_path / "folder")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # nothing made


@pytest.mark.parametrize("tool, args, message", [
    ("predict", ["--model={tmp}/m", "--input={tmp}", "--output={tmp}/a.csv",
                 "--submission={tmp}/a.csv"], "--submission and --output name the same path"),
    ("ensemble", ["--detections={tmp}/d.csv", "--output={tmp}"], "is a folder"),
    ("export", ["--run_dir={tmp}", "--output_dir={tmp}/file/exported"],
     "a file is in the way"),
])
def test_tools_refuse_outputs_before_any_work(tool, args, message, tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_line_error(run_tool(tool, *(arg.format(tmp=tmp_path) for arg in args),
                                   timeout=300))
    assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.slow
def test_two_exports_of_one_run_at_once_one_refused_naming_the_holder(
        trained_run, exported_best, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run.root, run, ignore=shutil.ignore_patterns("exported"))
    command = [sys.executable, "-m", "tools.export", f"--run_dir={run}"]
    exports = [subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(process, *process.communicate(timeout=900)) for process in exports]
    codes = sorted(process.returncode for process, _, _ in results)
    assert codes == [0, 2], [stderr[-2000:] for _, _, stderr in results]
    winner = next(process for process, _, _ in results if process.returncode == 0)
    refused = next(stderr for process, _, stderr in results if process.returncode == 2)
    assert f"another tfod-export (pid {winner.pid})" in refused, refused[-2000:]
    assert sorted(p.name for p in (run / "exported").iterdir()) == [
        "checkpoint", "export.json", "pipeline.config", "saved_model"]
    assert read_json(run / "exported" / "export.json")["smoke_test"]
    assert not list(run.glob(".exported.incoming*"))
