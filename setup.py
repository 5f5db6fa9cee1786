"""tfod: RSNA pneumonia detection on the TensorFlow 2 Object Detection API."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name):
    lines = (HERE / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


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
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tfod", "tfod.*", "tools"]),
    include_package_data=True,
    install_requires=read_requirements("runtime.txt"),
    extras_require={"dev": read_requirements("dev.txt")},
    entry_points={
        "console_scripts": [f"{name}={module}:run" for name, module in CONSOLE_SCRIPTS.items()]
    },
)
