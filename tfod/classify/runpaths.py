"""Where a classifier run keeps its files beyond :class:`tfod.runfolder.RunFolder`'s own.

``classifier.json`` (the config, read back by predict and evaluate), ``best/weights.*`` (the
Keras weights with the best validation AUC), ``exported/saved_model/`` (the SavedModel) and
``predictions/val_probabilities.csv`` (the validation fold's ``patientId,probability``).
"""
from __future__ import annotations

from pathlib import Path

from tfod import runfolder
from tfod.errors import BadInput
from tfod.runfolder import ExportFolder, RunFolder

CONFIG_NAME = "classifier.json"


def config_path(run: RunFolder) -> Path:
    return run.root / CONFIG_NAME


def saved_model_path(run: RunFolder) -> Path:
    return ExportFolder(run.exported).saved_model


def best_weights(run: RunFolder) -> Path:
    return run.best_dir / "weights"


def val_probabilities(run: RunFolder) -> Path:
    return run.predictions / "val_probabilities.csv"


def is_run_folder(path) -> bool:
    return config_path(RunFolder(path)).is_file()


def load_config(run_dir) -> dict:
    """The ``classifier.json`` of a classifier run folder; :class:`BadInput` when absent."""
    config = runfolder.read_json(config_path(RunFolder(run_dir)))
    if not config:
        raise BadInput(f"not a classifier run folder (no readable {CONFIG_NAME})", run_dir)
    return config
