"""The trainer's hooks: everything the training loop does besides training.

As in detectron2, a hook is an object with ``before_train``, ``after_step`` and
``after_train``, called by :class:`tfod.train.trainer.Trainer` in the order given.
``after_step`` runs after each ``tf.function`` call (``trainer.steps_per_call`` steps);
``after_train`` runs also when training failed (``trainer.error`` is then set), so that a
heartbeat thread stops and a NaN run is never saved.

What a hook may read on the trainer: ``run``, ``start``, ``step``, ``target``,
``steps_per_call``, ``losses`` (floats of the last step, with ``learning_rate``),
``seconds_per_step``, ``is_chief``, ``manager`` (its ``tf.train.CheckpointManager``), ``error``;
and it may set ``stop_reason`` to end training after the current call.
"""
from __future__ import annotations

import logging
import math
import threading

from tfod.runfolder import RUNNING, latest_checkpoint, read_stop_request, write_status
from tfod.train.odapi import LOSS_KEY, TrainError

log = logging.getLogger("tfod.train")


class NonFiniteLoss(TrainError):
    """The training loss became NaN or infinite."""


class Hook:
    """Does nothing; subclasses override what they need."""

    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def after_train(self, trainer) -> None:
        pass


class NonFiniteLossCheck(Hook):
    """Stops training with :class:`NonFiniteLoss` (exit code 3) on a NaN or infinite loss,
    before any checkpoint of the broken weights is written (keep it before the saver)."""

    def after_step(self, trainer) -> None:
        if math.isfinite(trainer.losses[LOSS_KEY]):
            return
        good = latest_checkpoint(trainer.run.root)
        where = f"the last good checkpoint is {good.name} (step {good.step})" if good else \
            "no checkpoint was saved"
        raise NonFiniteLoss(
            f"the training loss is not finite near step {trainer.step}; {where}. Lower the "
            "learning rate or check the data.")


class Heartbeat(Hook):
    """Writes ``train_status.json`` (state ``running``, the step) every few seconds from a
    thread, so that the evaluator and the launcher see a trainer stuck inside one long call."""

    def __init__(self, seconds: float = 10.0):
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = None

    def before_train(self, trainer) -> None:
        if not trainer.is_chief:
            return

        def beat():
            while True:
                write_status(trainer.run, RUNNING, step=trainer.step, target=trainer.target)
                if self._stop.wait(self.seconds):
                    return

        self._thread = threading.Thread(target=beat, name="tfod-heartbeat", daemon=True)
        self._thread.start()

    def after_train(self, trainer) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()


class PeriodicCheckpoint(Hook):
    """Saves step 0, every ``every`` steps, and the final step (also after a stop request),
    so that the last checkpoint always holds the step the run ended at."""

    def __init__(self, every: int):
        self.every = every
        self._saved = 0

    def before_train(self, trainer) -> None:
        self._saved = trainer.step
        if trainer.step == 0:
            trainer.manager.save()

    def after_step(self, trainer) -> None:
        if trainer.step - self._saved >= self.every:
            trainer.manager.save()
            self._saved = trainer.step

    def after_train(self, trainer) -> None:
        if trainer.error is None and self._saved != trainer.step:
            trainer.manager.save()
            self._saved = trainer.step


class ProgressLog(Hook):
    """Logs ``Step N per-step time Xs`` (the OD API's line, which the launcher turns into its
    progress line), the losses, the learning rate and the ETA every ``every`` steps."""

    def __init__(self, every: int):
        self.every = every
        self._logged = 0

    def before_train(self, trainer) -> None:
        self._logged = trainer.step

    def after_step(self, trainer) -> None:
        if trainer.step - self._logged < self.every and trainer.step < trainer.target:
            return
        self._logged = trainer.step
        eta = (trainer.target - trainer.step) * trainer.seconds_per_step
        values = ", ".join(f"{name} {value:.4g}" for name, value in trainer.losses.items())
        log.info("Step %d per-step time %.3fs, ETA %s; %s", trainer.step,
                 trainer.seconds_per_step, duration(eta), values)


def duration(seconds: float) -> str:
    """``4m05s``, ``1h02m``: an ETA as the trainer's and the evaluator's log lines show it."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class TrainSummaries(Hook):
    """Writes the losses, the learning rate and steps/s to ``train/`` TensorBoard events after
    every call (the chief only: the other workers' numbers are the same reduced values)."""

    def __init__(self):
        self._writer = None

    def before_train(self, trainer) -> None:
        import tensorflow as tf

        if trainer.is_chief:
            self._writer = tf.summary.create_file_writer(str(trainer.run.train_events))

    def after_step(self, trainer) -> None:
        import tensorflow as tf

        if self._writer is None:
            return
        with self._writer.as_default(step=trainer.step):
            for name, value in trainer.losses.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("steps_per_sec", 1.0 / max(trainer.seconds_per_step, 1e-9))

    def after_train(self, trainer) -> None:
        if self._writer is not None:
            self._writer.close()


class StopRequest(Hook):
    """Ends training after the current call when the run folder holds a stop request
    (``stop_request.json``: early stopping, or a user); the final step is then saved."""

    def after_step(self, trainer) -> None:
        reason = read_stop_request(trainer.run)
        if reason is not None:
            log.info("stop requested at step %d: %s", trainer.step, reason)
            trainer.stop_reason = reason
