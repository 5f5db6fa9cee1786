"""The run folder: one training run's config, logs, events, checkpoints and state.

Layout (``RunFolder`` names every path; nothing else in tfod spells them)::

    <run_dir>/
      pipeline.config      the exact config the trainer and the evaluator read
      settings.json        the training settings they read (steps, checkpoints, early stop...)
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
      .lock                the launcher's lock (one launcher per run: ``PidLock``)
      .exported.lock       tfod-export's lock on exported/ (one export at a time)

Only the standard library is used here (checkpoint steps are read through TensorFlow, imported
when asked), so the launcher can plan a run without loading TensorFlow.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tfod.errors import BadInput

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
    def settings(self) -> Path:
        return self.root / "settings.json"

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
        return ExportFolder(self.exported).export_json

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
            (self.settings, "the training settings the trainer and the evaluator read"),
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


@contextmanager
def atomic_write(path, mode: str = "w", newline: str | None = None,
                 check: Callable[[Path], None] | None = None) -> Iterator[IO]:
    """Open a stream whose file appears at ``path`` whole or not at all: the one way tfod
    writes an output file.

    The stream writes a hidden temporary file in ``path``'s folder (``.<name>.<pid>.<n>.tmp``,
    mode 0666 less the umask, like any new file); when the block ends cleanly the file is
    flushed, fsynced, given to ``check`` (its temporary path, e.g. to read it back) and renamed
    onto ``path``. An exception (a full disk, a failed check) deletes it and leaves an earlier
    ``path`` as it was; a killed process leaves at most the hidden temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMPORARY_NUMBERS)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, mode, newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if check is not None:
            check(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


_TEMPORARY_NUMBERS = itertools.count()


def finite_or_none(value):
    """``value`` for a JSON file: a number when finite (numpy's as Python's), ``None`` when
    missing, NaN or infinite (JSON has no NaN); dicts and lists converted item by item."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def json_text(data) -> str:
    """``data`` as the JSON text of tfod's files (indented, sorted keys)."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, data) -> None:
    """Write JSON atomically (:func:`atomic_write`: a reader never sees half a file)."""
    with atomic_write(path) as stream:
        stream.write(json_text(data))


class LockHeld(Exception):
    """Another live process holds the lock ``path``; ``holder`` is its pid ('?' if unknown)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by pid {holder}")
        self.path, self.holder = path, holder


class PidLock:
    """An exclusive ``fcntl.flock`` on the file ``path``, which holds the holder's pid.

    The kernel drops the lock when its holder dies, however it dies, so a lock file left by a
    dead process is simply taken over (``took_over`` is then its pid); a live holder makes
    :meth:`acquire` raise :class:`LockHeld`. The descriptor is not inherited by children.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.file = None
        self.took_over: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeld` naming the live holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise LockHeld(self.path, holder) from None
        handle.seek(0)
        previous = handle.read().strip()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.file = handle
        if previous.isdigit() and int(previous) != os.getpid():
            self.took_over = int(previous)

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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


def read_best_checkpoint(run: RunFolder) -> dict | None:
    """``best_checkpoint.json`` of ``run`` (at least its ``checkpoint`` and ``step``); None when
    the evaluator has written none; :class:`BadInput` naming the file when it is damaged."""
    try:
        text = run.best_checkpoint.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read it ({error})", run.best_checkpoint) from None
    try:
        best = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"not JSON ({error.msg})", run.best_checkpoint, error.lineno) from None
    if not (isinstance(best, dict) and isinstance(best.get("checkpoint"), str)
            and isinstance(best.get("step"), int)):
        raise BadInput("lacks the evaluator's 'checkpoint' (a name) and 'step' (an integer)",
                       run.best_checkpoint)
    return best


def _checkpoint_error(prefix: Path, error) -> BadInput:
    """A TensorFlow error reading checkpoint ``prefix`` as one line naming the damaged file."""
    data = sorted(prefix.parent.glob(prefix.name + ".data-*"))
    damaged = data[0] if "sstable" not in error.message and data else prefix.with_name(
        prefix.name + ".index")
    return BadInput(f"damaged checkpoint {prefix.name} ({error.message.splitlines()[0]})",
                    damaged)


def checkpoint_variables(prefix, verify: bool = False) -> list[str]:
    """The variable names of checkpoint ``prefix``; with ``verify``, every value is read (its
    checksum checked) too. :class:`BadInput` naming the file when the checkpoint is damaged."""
    import tensorflow as tf

    prefix = Path(prefix)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = sorted(reader.get_variable_to_shape_map())
        for name in names if verify else ():
            reader.get_tensor(name)
    except tf.errors.OpError as error:  # TensorFlow's reader raises the base class
        raise _checkpoint_error(prefix, error) from None
    return names


def checkpoint_step(prefix) -> int:
    """The global step saved in an OD API checkpoint (:class:`BadInput` when it is damaged)."""
    import tensorflow as tf

    try:
        return int(tf.train.load_variable(str(prefix), "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except tf.errors.OpError as error:  # TensorFlow's reader raises the base class
        raise _checkpoint_error(Path(prefix), error) from None


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
            except (tf.errors.NotFoundError, BadInput):
                continue  # deleted by the trainer's CheckpointManager while we looked
    return found


def latest_checkpoint(run_dir) -> Checkpoint | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None
