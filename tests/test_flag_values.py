"""Every number flag of every tool refuses nan, infinities and values outside its range when the
flags are parsed (exit 2, one line naming the flag), before any work.

absl's ``lower_bound``/``upper_bound`` let ``nan`` through (it compares False with anything);
:func:`tfod.cli.parse_flags` refuses it. The probe runs in one process per tool (absl flags are
global: two tools' flags cannot be defined in one process) and parses one bad value at a time.
"""
import json
import subprocess
import sys

import pytest
from conftest import REPO, one_line_error, run_tool
from conftest import TOOL_ENV as ENV

TOOLS = ["classify", "convert_rsna", "demo", "ensemble", "evaluate", "export", "make_config",
         "predict", "train"]

PROBE = r'''
import contextlib, importlib, io, json, sys
from absl import flags
from tfod import cli

tool = sys.argv[1]
importlib.import_module(f"tools.{tool}")
results = {}
for owner in (f"tools.{tool}", "tfod.cli"):
    for flag in cli.FLAGS.get_flags_for_module(owner):
        parser = flag.parser
        if not isinstance(parser, (flags.FloatParser, flags.IntegerParser)):
            continue
        bad = ["nan", "inf", "-inf"] if isinstance(parser, flags.FloatParser) else []
        if parser.lower_bound is not None:
            bad.append(str(parser.lower_bound - 1))
        if parser.upper_bound is not None:
            bad.append(str(parser.upper_bound + 1))
        if parser.lower_bound is None and flag.validators:  # cli.require_positive
            bad += ["0", "-1"]
        outcomes = {}
        for value in bad:
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                try:
                    cli.parse_flags([tool, f"--{flag.name}={value}"])
                    code = 0
                except SystemExit as stop:
                    code = stop.code
            cli.FLAGS.unparse_flags()
            outcomes[value] = [code, stderr.getvalue().strip()]
        results[flag.name] = {"ranged": parser.lower_bound is not None or bool(flag.validators),
                              "outcomes": outcomes}
print(json.dumps(results))
'''


@pytest.mark.parametrize("tool", TOOLS)
def test_every_number_flag_has_a_range_and_refuses_bad_values_at_parse_time(tool):
    done = subprocess.run([sys.executable, "-c", PROBE, tool], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for name, result in results.items():
        assert result["ranged"], f"--{name} of {tool} has no range"
        for value, (code, message) in result["outcomes"].items():
            assert code == 2, (name, value, message)
            assert f"--{name}=" in message and len(message.splitlines()) == 1, message


@pytest.mark.parametrize("tool, args, flag", [
    ("predict", ["--model={tmp}/m", "--input={tmp}/in", "--output={tmp}/out.csv",
                 "--threshold=nan"], "--threshold=nan"),
    ("ensemble", ["--detections={tmp}/d.csv", "--output={tmp}/out.csv", "--threshold=nan"],
     "--threshold=nan"),
    ("ensemble", ["--detections={tmp}/d.csv", "--output={tmp}/out.csv", "--box_scale=nan"],
     "--box_scale=nan"),
    ("ensemble", ["--detections={tmp}/d.csv", "--output={tmp}/out.csv", "--weights=1,nan"],
     "--weights"),
    ("evaluate", ["--detections={tmp}/d.csv", "--output_dir={tmp}/out", "--box_scale=inf"],
     "--box_scale=inf"),
    ("train", ["--model=ssd_mobilenet_v2", "--data_dir={tmp}/data", "--run_dir={tmp}/run",
               "--learning_rate=nan"], "--learning_rate=nan"),
    ("classify", ["--run_dir={tmp}/run", "--learning_rate=-1"], "--learning_rate=-1"),
])
def test_tools_stop_on_a_bad_number_naming_the_flag(tool, args, flag, tmp_path):
    line = one_line_error(run_tool(tool, *(arg.format(tmp=tmp_path) for arg in args),
                                   timeout=300))
    assert flag in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written
