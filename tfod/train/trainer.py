"""The trainer process: our own training loop over the OD API's public pieces, with hooks.

Why not ``model_main_tf2`` / ``model_lib_v2.train_loop``: the stock loop runs in chunks of 100
steps (it stops at the next multiple of 100, not at the step asked), saves only every
``checkpoint_every_n`` steps with no final save, cannot be stopped from outside, and offers no
place for a NaN check or a heartbeat but patching its module. Here the loop is built from the
public pieces (``config_util``, ``model_builder``, ``optimizer_builder``,
``tf.train.Checkpoint`` / ``CheckpointManager``) with our own input pipeline
(:mod:`tfod.train.inputs`), train step and fine-tune checkpoint loading
(:mod:`tfod.train.odapi`), and what happens around the steps are :mod:`tfod.train.hooks`:

* it runs :func:`steps_per_iteration` steps per ``tf.function`` call, a number that divides
  the steps left and the checkpoint interval, so it lands exactly on ``num_steps`` and on each
  checkpoint; the final step is always saved;
* it resumes from the latest checkpoint of the run folder;
* it uses ``MirroredStrategy`` over the visible GPUs when there are several (or over
  ``cpu_replicas`` logical CPU devices, the same path on a machine without GPUs), and
  ``MultiWorkerMirroredStrategy`` with ``num_workers > 1`` and ``TF_CONFIG`` (only the chief
  keeps checkpoints, events and the status);
* a non-finite loss stops it with :class:`tfod.train.hooks.NonFiniteLoss` (exit code 3)
  before anything is saved;
* a stop request in the run folder (:func:`tfod.runfolder.request_stop`) saves and ends it as
  ``finished`` with ``stopped_early``; a rerun then trains nothing more.
"""
from __future__ import annotations

import functools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence

import tfod.compat  # noqa: F401  (before object_detection)
from tfod.config.pipeline import read_configs
from tfod.runfolder import FINISHED, RunFolder, latest_checkpoint, read_stop_request, write_status
from tfod.train import hooks as train_hooks
from tfod.train.odapi import (
    LOSS_KEY,
    TrainError,
    build_variables,
    load_fine_tune_checkpoint,
    sum_over_replicas,
    train_step,
)
from tfod.train.settings import TrainSettings

NAN_MESSAGE = "tfod: the training loss is not finite"
MAX_STEPS_PER_CALL = 100

log = logging.getLogger("tfod.train")


def finite_loss_step(train_step):
    """``train_step`` (:func:`tfod.train.odapi.train_step`) that fails on a NaN/Inf total loss.

    ``tf.debugging.Assert`` is stateful, so ``tf.function`` runs it even inside the loop of
    several steps whose results are dropped; the trainer turns the failure into a NaN loss.
    """
    import tensorflow as tf

    @functools.wraps(train_step)
    def checked(*args, **kwargs):
        losses = train_step(*args, **kwargs)
        total = losses[LOSS_KEY]
        tf.debugging.Assert(tf.math.is_finite(total), [NAN_MESSAGE, total])
        return losses

    return checked


def steps_per_iteration(start: int, target: int, checkpoint_every: int) -> int:
    """Steps per ``tf.function`` call that land exactly on ``target`` and on each checkpoint."""
    return math.gcd(target - start, checkpoint_every, MAX_STEPS_PER_CALL)


def choose_strategy(num_workers: int = 1, cpu_replicas: int = 0):
    """MultiWorkerMirrored for several workers; Mirrored over several GPUs, or over
    ``cpu_replicas`` logical CPU devices (the several-GPU path, testable without a GPU);
    else the default strategy. Call it before any other TensorFlow work."""
    import tensorflow as tf

    if num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy(
            [device.name for device in tf.config.list_logical_devices("CPU")])
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class Trainer:
    """The model, optimizer, input and checkpoint of one run, and the loop that trains them.

    Built inside ``strategy.scope()`` from the run's pipeline config; restored from the run
    folder's latest checkpoint (else from the config's fine-tune checkpoint).
    """

    def __init__(self, run: RunFolder, configs: dict, strategy, target: int, steps_per_call: int,
                 max_to_keep: int = 7, hooks=()):
        self.run, self.configs, self.strategy = run, configs, strategy
        self.target, self.steps_per_call, self.hooks = target, steps_per_call, list(hooks)
        self.is_chief = strategy.extended.should_checkpoint
        self.losses: dict[str, float] = {}
        self.seconds_per_step = 0.0
        self.stop_reason: str | None = None
        self.error: BaseException | None = None
        with strategy.scope():
            self._build()
            self._restore(max_to_keep)
            self._call = self._iteration()
        self.start = self.step = int(self.global_step.numpy())

    def _build(self) -> None:
        import tensorflow as tf
        from object_detection.builders import model_builder, optimizer_builder

        from tfod.train.inputs import train_dataset

        train_config = self.configs["train_config"]
        self.model = model_builder.build(self.configs["model"], is_training=True,
                                         add_summaries=False)

        def dataset_fn(input_context):
            return train_dataset(
                train_config=train_config, train_input_config=self.configs["train_input_config"],
                model_config=self.configs["model"], model=self.model,
                input_context=input_context).repeat()

        self.dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        self.iterator = iter(self.dataset)
        self.global_step = tf.Variable(0, trainable=False, dtype=tf.int64, name="global_step",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.optimizer, (learning_rate,) = optimizer_builder.build(
            train_config.optimizer, global_step=self.global_step)
        self.learning_rate = learning_rate if callable(learning_rate) else lambda: learning_rate
        if train_config.optimizer.use_moving_average:
            build_variables(self.strategy, self.model, next(iter(self.dataset)),
                            train_config.unpad_groundtruth_tensors)
            self.optimizer.shadow_copy(self.model)

    def _restore(self, max_to_keep: int) -> None:
        """Restore the latest checkpoint of the run, else load the fine-tune checkpoint. A
        non-chief worker saves into a temporary folder (every worker must take part in a save)
        that :meth:`train` removes."""
        import tensorflow as tf

        checkpoint = tf.train.Checkpoint(step=self.global_step, model=self.model,
                                         optimizer=self.optimizer)
        directory = str(self.run.root) if self.is_chief else tempfile.mkdtemp(prefix="tfod-worker")
        self.manager = tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=max_to_keep if self.is_chief else 1)
        latest = tf.train.latest_checkpoint(str(self.run.root))
        if latest:
            checkpoint.restore(latest)
        elif self.configs["train_config"].fine_tune_checkpoint:
            self._load_fine_tune_checkpoint()

    def _load_fine_tune_checkpoint(self) -> None:
        from object_detection.utils import config_util, variables_helper

        train_config = self.configs["train_config"]
        config_util.update_fine_tune_checkpoint_type(train_config)
        variables_helper.ensure_checkpoint_supported(
            train_config.fine_tune_checkpoint, train_config.fine_tune_checkpoint_type,
            str(self.run.root))
        log.info("starting from the fine-tune checkpoint %s (%s)",
                 train_config.fine_tune_checkpoint, train_config.fine_tune_checkpoint_type)
        load_fine_tune_checkpoint(self.model, train_config, self.strategy, self.dataset)

    def _iteration(self):
        """A ``tf.function`` running ``steps_per_call`` distributed steps of
        :func:`tfod.train.odapi.train_step`; it returns the losses of the last one, summed over
        replicas."""
        import tensorflow as tf

        train_config, strategy = self.configs["train_config"], self.strategy
        step = finite_loss_step(train_step)

        def replica_step(features, labels):
            losses = step(self.model, self.optimizer, features, labels, train_config,
                          strategy.num_replicas_in_sync, training_step=self.global_step)
            self.global_step.assign_add(1)
            return losses

        def one_step(iterator):
            return sum_over_replicas(strategy, strategy.run(replica_step,
                                                            args=iterator.get_next()))

        @tf.function
        def iteration(iterator):
            for _ in tf.range(self.steps_per_call - 1):
                one_step(iterator)
            return one_step(iterator)

        return iteration

    def run_iteration(self) -> None:
        """One call: ``steps_per_call`` steps; a failed NaN check reads as a NaN loss."""
        import tensorflow as tf

        started = time.time()
        try:
            losses = {name: float(value) for name, value in self._call(self.iterator).items()}
        except tf.errors.InvalidArgumentError as error:
            if NAN_MESSAGE not in str(error):
                raise
            losses = {LOSS_KEY: math.nan}
        self.step = int(self.global_step.numpy())
        self.losses = {**losses, "learning_rate": float(self.learning_rate())}
        self.seconds_per_step = (time.time() - started) / self.steps_per_call

    def train(self) -> int:
        """Train to ``target`` or to a stop request, calling the hooks; return the step."""
        for hook in self.hooks:
            hook.before_train(self)
        try:
            while self.step < self.target and self.stop_reason is None:
                self.run_iteration()
                for hook in self.hooks:
                    hook.after_step(self)
        except BaseException as error:
            self.error = error
            raise
        finally:
            for hook in self.hooks:
                hook.after_train(self)
            if not self.is_chief:
                shutil.rmtree(self.manager.directory, ignore_errors=True)
        return self.step


def default_hooks(settings: TrainSettings, heartbeat_seconds: float) -> list[train_hooks.Hook]:
    """NaN check first (nothing NaN is saved), then stop request, checkpoint, log, events."""
    return [train_hooks.NonFiniteLossCheck(), train_hooks.StopRequest(),
            train_hooks.PeriodicCheckpoint(settings.checkpoint_every),
            train_hooks.ProgressLog(settings.log_every), train_hooks.TrainSummaries(),
            train_hooks.Heartbeat(heartbeat_seconds)]


def train(run_dir, settings: TrainSettings, hooks: Sequence[train_hooks.Hook] = (),
          heartbeat_seconds: float = 10.0) -> int:
    """Train the run's ``pipeline.config`` to ``settings.num_steps``, resuming from the run
    folder; return the final step, which is always saved as a checkpoint. ``hooks`` run after
    the default ones (:func:`default_hooks`), as detectron2's ``register_hooks`` adds them."""
    strategy = choose_strategy(settings.num_workers, settings.cpu_replicas)  # TF's first work
    run = RunFolder(run_dir).create()
    configs = read_configs(run.pipeline_config)
    target = settings.num_steps
    _check_input_shards(configs["train_input_config"], settings.num_workers)
    is_chief = strategy.extended.should_checkpoint
    latest = latest_checkpoint(run.root)
    if _nothing_to_train(run, latest, target):
        return latest.step
    per_call = steps_per_iteration(latest.step if latest else 0, target, settings.checkpoint_every)
    log.info("strategy %s with %d replica(s); %d step(s) per call", type(strategy).__name__,
             strategy.num_replicas_in_sync, per_call)
    trainer = Trainer(run, configs, strategy, target, per_call, settings.max_to_keep,
                      default_hooks(settings, heartbeat_seconds) + list(hooks))
    step = trainer.train()
    if is_chief:
        stopped = ({"stopped_early": True, "reason": trainer.stop_reason}
                   if trainer.stop_reason else {})
        write_status(run, FINISHED, step=step, target=target, **stopped)
    if trainer.stop_reason:
        log.info("training stopped early at step %d: %s", step, trainer.stop_reason)
    else:
        log.info("training finished at step %d", step)
    return step


def _check_input_shards(train_input_config, workers: int) -> None:
    """Several workers share the training records by file (the OD API's input sharding): a
    worker without a file would wait forever for data, so refuse that up front."""
    import tensorflow as tf

    patterns = list(train_input_config.tf_record_input_reader.input_path)
    files = {name for pattern in patterns for name in tf.io.gfile.glob(pattern)}
    if len(files) < workers:
        raise TrainError(f"{workers} workers need at least {workers} training record files "
                         f"(the OD API shards by file); {patterns} match {len(files)}")


def _nothing_to_train(run: RunFolder, latest, target: int) -> bool:
    """True (and the status rewritten) when the run reached ``target`` or was stopped early."""
    reason = read_stop_request(run)
    if latest and reason is not None:
        log.info("%s at step %d was stopped early (%s): nothing to train; delete %s to go on",
                 latest.name, latest.step, reason, run.stop_request.name)
        write_status(run, FINISHED, step=latest.step, target=target, stopped_early=True,
                     reason=reason)
        return True
    if latest and latest.step >= target:
        log.info("%s is at step %d, which reaches the %d steps asked: nothing to train",
                 latest.name, latest.step, target)
        write_status(run, FINISHED, step=latest.step, target=target)
        return True
    if latest:
        log.info("resuming from %s at step %d, training to step %d", latest.name, latest.step,
                 target)
    else:
        log.info("training from step 0 to step %d", target)
    return False
