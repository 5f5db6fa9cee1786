"""tfod: RSNA pneumonia detection on the TensorFlow 2 Object Detection API."""

import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "tfod"))
# tfod/stack.py is pure Python: it picks the pins before anything is installed.
from stack import read_pins, stack_for_python  # noqa: E402


def requirements(relative_path):
    return [f"{name}=={version}" for name, version in read_pins(HERE / relative_path).items()]


CONSOLE_SCRIPTS = {
    "tfod-doctor": "tools.doctor",
    "tfod-convert": "tools.convert_rsna",
    "tfod-evaluate": "tools.evaluate",
    "tfod-config": "tools.make_config",
    "tfod-train": "tools.train",
    "tfod-demo": "tools.demo",
    "tfod-classify": "tools.classify",
    "tfod-ensemble": "tools.ensemble",
    "tfod-export": "tools.export",
    "tfod-predict": "tools.predict",
}

setup(
    name="tfod",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["tfod", "tfod.*", "tools"]),
    include_package_data=True,
    install_requires=requirements(stack_for_python().requirements),
    extras_require={"dev": requirements("requirements/dev.txt")},
    entry_points={
        "console_scripts": [f"{name}={module}:run" for name, module in CONSOLE_SCRIPTS.items()]
    },
)
