"""The run folder: one training run's config, logs, events, checkpoints and state.

Layout (``RunFolder`` names every path; nothing else in tfod spells them)::

    <run_dir>/
      pipeline.config      the exact config the trainer and the evaluator read
      launch.json          how the run was launched (backend, commands, flags, versions, commit)
      logs/train.log       trainer output (appended across restarts and reruns)
      logs/eval.log        evaluator output
      train/               TensorBoard events of the trainer (losses, learning rate)
      eval/                TensorBoard events of the evaluator (COCO metrics, rsna/score)
      eval/evaluated.json  the checkpoints already evaluated, with their metrics
      checkpoint, ckpt-*   the OD API's checkpoints (``ckpt-N``: N counts saves, not steps)
      best_checkpoint.json the checkpoint with the best rsna/score, its step and score
      best/ckpt-*          a copy of that checkpoint, kept when the trainer deletes old ones
      predictions/val-step{N}.csv   the evaluator's detections on the eval fold at step N
      predictions/val.csv  those of the best checkpoint (the detections CSV of tfod-evaluate)
      exported/            tfod-export's folder (``ExportFolder``): saved_model/, pipeline.config,
                           checkpoint/, export.json (which checkpoint, its score, versions,
                           the formats written), model.onnx, model.tflite,
                           model_int8.tflite, serving/1/ (the encoded-image SavedModel)
      train_status.json    the trainer's state and heartbeat, read by the evaluator
      stop_request.json    asks the trainer to save and stop early (written by the evaluator's
                           early stopping or by a user), with the reason

Only the standard library is used here (checkpoint steps are read through TensorFlow, imported
when asked), so the launcher can plan a run without loading TensorFlow.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Trainer states written to train_status.json. The evaluator stops waiting in the terminal ones.
LAUNCHED, RUNNING, FINISHED, FAILED, NAN_LOSS, STOPPED = (
    "launched", "running", "finished", "failed", "nan_loss", "stopped"
)
TERMINAL_STATES = frozenset({FINISHED, NAN_LOSS, STOPPED})


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def pipeline_config(self) -> Path:
        return self.root / "pipeline.config"

    @property
    def launch_json(self) -> Path:
        return self.root / "launch.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def train_log(self) -> Path:
        return self.logs / "train.log"

    @property
    def eval_log(self) -> Path:
        return self.logs / "eval.log"

    @property
    def tensorboard_log(self) -> Path:
        return self.logs / "tensorboard.log"

    @property
    def train_events(self) -> Path:
        return self.root / "train"

    @property
    def eval_events(self) -> Path:
        return self.root / "eval"

    @property
    def evaluated(self) -> Path:
        return self.eval_events / "evaluated.json"

    @property
    def best_checkpoint(self) -> Path:
        return self.root / "best_checkpoint.json"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def val_detections(self, step: int | None = None) -> Path:
        """The eval fold's detections at ``step``; without a step, the best checkpoint's."""
        return self.predictions / ("val.csv" if step is None else f"val-step{step}.csv")

    @property
    def exported(self) -> Path:
        return self.root / "exported"

    @property
    def export_json(self) -> Path:
        return self.exported / "export.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def status(self) -> Path:
        return self.root / "train_status.json"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop_request.json"

    def create(self) -> RunFolder:
        for folder in (self.root, self.logs, self.train_events, self.eval_events,
                       self.predictions):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def plan(self) -> list[str]:
        """The layout, one line per entry, marking what exists already (for --dry_run)."""
        entries = [
            (self.pipeline_config, "the exact pipeline config of the run"),
            (self.launch_json, "backend, commands, image, flags, versions, git commit"),
            (self.train_log, "trainer output"),
            (self.eval_log, "evaluator output"),
            (self.train_events, "TensorBoard events: losses, learning rate"),
            (self.eval_events, "TensorBoard events: COCO metrics and rsna/score"),
            (self.root / "ckpt-*", "checkpoints (the trainer resumes from the latest)"),
            (self.best_checkpoint, "best checkpoint by rsna/score (name, step, score)"),
            (self.val_detections(), "eval-fold detections of the best checkpoint"),
        ]
        lines = [f"run folder {self.root}" + (" (exists: resuming)" if self.root.exists() else "")]
        for path, what in entries:
            mark = "exists" if path.exists() or list(path.parent.glob(path.name)) else "new"
            lines.append(f"  {str(path.relative_to(self.root)):<20} {mark:<7} {what}")
        return lines


@dataclass(frozen=True)
class ExportFolder:
    """Paths inside one export folder (a run's ``exported/`` or ``tfod-export --output_dir``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def saved_model(self) -> Path:
        """The OD API SavedModel (``float_image_tensor`` signature)."""
        return self.root / "saved_model"

    @property
    def pipeline_config(self) -> Path:
        return self.root / "pipeline.config"

    @property
    def export_json(self) -> Path:
        return self.root / "export.json"

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def tflite(self) -> Path:
        return self.root / "model.tflite"

    @property
    def tflite_int8(self) -> Path:
        return self.root / "model_int8.tflite"

    @property
    def serving(self) -> Path:
        """TF Serving's model base path; version 1 is the ``encoded_image_string_tensor``
        SavedModel."""
        return self.root / "serving"

    @property
    def serving_saved_model(self) -> Path:
        return self.serving / "1"


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def write_status(run: RunFolder, state: str, **fields) -> None:
    """Record the trainer's state with a timestamp (the evaluator's heartbeat)."""
    write_json(run.status, {"state": state, "time": time.time(), "pid": os.getpid(), **fields})


def read_status(run: RunFolder) -> dict:
    return read_json(run.status, default={}) or {}


def request_stop(run: RunFolder, reason: str) -> None:
    """Ask the trainer of ``run`` to save and stop at its next step (it finishes with
    ``stopped_early`` and the reason; delete ``stop_request.json`` to let a rerun train on)."""
    write_json(run.stop_request, {"reason": reason, "time": time.time(), "pid": os.getpid()})


def read_stop_request(run: RunFolder) -> str | None:
    """The reason of a pending stop request, or None."""
    request = read_json(run.stop_request)
    return str(request.get("reason") or "stop requested") if request is not None else None


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its prefix path and the training step stored in it."""

    path: Path
    step: int

    @property
    def name(self) -> str:
        return self.path.name


def checkpoint_step(prefix) -> int:
    """The global step saved in an OD API checkpoint."""
    import tensorflow as tf

    return int(tf.train.load_variable(str(prefix), "step/.ATTRIBUTES/VARIABLE_VALUE"))


def list_checkpoints(run_dir) -> list[Checkpoint]:
    """The checkpoints listed in ``run_dir/checkpoint`` that still exist, oldest first."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(run_dir))
    if state is None:
        return []
    found = []
    for prefix in state.all_model_checkpoint_paths:
        path = Path(run_dir).resolve() / Path(prefix).name
        if path.with_name(path.name + ".index").exists():
            try:
                found.append(Checkpoint(path, checkpoint_step(path)))
            except (tf.errors.NotFoundError, tf.errors.DataLossError):
                continue  # deleted by the trainer's CheckpointManager while we looked
    return found


def latest_checkpoint(run_dir) -> Checkpoint | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None
