"""Which Python gets which TensorFlow (tfod/stack.py), and the refusal of what cannot run."""

import glob
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tensorflow as tf

from tfod import stack

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("python, name", [((3, 10), "tf2.15"), ((3, 11), "tf2.15"),
                                          ((3, 12), "tf2.21"), ((3, 13), "tf2.21")])
def test_each_supported_python_has_its_stack_and_pins(python, name):
    chosen = stack.stack_for_python(python)
    assert chosen.name == name
    pins = stack.read_pins(REPO / chosen.requirements)
    assert pins["tensorflow"] == chosen.tensorflow
    assert ("tf-keras" in pins) == (name == "tf2.21")


@pytest.mark.parametrize("python", [(3, 8), (3, 9), (3, 14)])
def test_an_unsupported_python_is_refused_naming_the_supported_ones(python):
    with pytest.raises(stack.StackError) as refused:
        stack.stack_for_python(python)
    assert str(refused.value) == (
        f"Python {python[0]}.{python[1]} is not supported: tfod runs on Python 3.10 and 3.11 "
        "(TensorFlow 2.15.1), 3.12 and 3.13 (TensorFlow 2.21.0)")


def _fake_tensorflow(version, keras_package=None, keras_version=None):
    """A module shaped like ``tensorflow`` whose ``tf.keras.Model`` comes from ``keras_package``."""
    fake = types.SimpleNamespace(__version__=version)
    if keras_package:
        module = f"fake_{keras_package}_{keras_version.replace('.', '_')}"
        sys.modules[module] = types.SimpleNamespace(__name__=keras_package,
                                                    __version__=keras_version)
        model = type("Model", (), {"__module__": f"{module}.src.engine.training"})
        fake.keras = types.SimpleNamespace(Model=model)
    return fake


@pytest.mark.parametrize("fake", [
    _fake_tensorflow("2.16.1"),                                 # no Keras at all
    _fake_tensorflow("2.21.0", "keras", "3.15.1"),              # Keras 3
    _fake_tensorflow("2.12.0", "keras", "2.12.0"),              # too old
])
def test_check_tensorflow_refuses_what_the_od_api_cannot_run_on(fake):
    with pytest.raises(stack.StackError, match=fake.__version__):
        stack.check_tensorflow(fake)


@pytest.mark.parametrize("fake", [
    _fake_tensorflow("2.15.1", "keras", "2.15.0"),              # TensorFlow 2.15's own Keras 2
    _fake_tensorflow("2.21.0", "tf_keras", "2.21.0"),           # tf-keras on TensorFlow 2.21
])
def test_check_tensorflow_accepts_keras_2_behind_tf_keras(fake):
    stack.check_tensorflow(fake)


def test_the_installed_stack_is_the_one_for_this_python():
    chosen = stack.stack_for_python()
    stack.check_tensorflow(tf)
    assert tf.__version__ == chosen.tensorflow
    package, version = stack.keras_in_use(tf)
    assert version.startswith("2.")
    assert package == ("tf_keras" if chosen.name == "tf2.21" else "keras")


def test_a_bad_pin_names_its_file_and_line(tmp_path):
    pins = tmp_path / "runtime.txt"
    pins.write_text("# pins\nnumpy==2.5.5\ntensorflow>=2.16  # a range\n")
    with pytest.raises(stack.StackError, match=rf"^{pins}:3: 'tensorflow>=2.16' is not "):
        stack.read_pins(pins)


def _unsupported_python() -> str:
    """A real interpreter no stack supports (pyenv's 3.9 or 3.8 on our machines)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/3.[89].*/bin/python3.[89]"))
    assert found, f"no Python 3.8 or 3.9 under {root}/versions to try `make venv` with"
    return found[-1]


def test_make_stops_an_unsupported_python_before_pip_with_one_line(tmp_path):
    python = _unsupported_python()
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "--no-print-directory", "venv", f"PYTHON={python}",
                           f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1 and "is not supported: tfod runs on Python 3.10 and 3.11" in ours[0]
    assert done.stdout == "" and not venv.exists()
