"""The training schedule as proto edits: peak learning rate, its scaling with the batch, and the
step count with warm-up and boundaries that keep their fractions."""
from __future__ import annotations

from google.protobuf.message import Message

from tfod.config import ConfigError


def learning_rate_proto(train_config) -> Message:
    """The learning rate message of the config's optimizer."""
    optimizer = getattr(train_config.optimizer, train_config.optimizer.WhichOneof("optimizer"))
    return optimizer.learning_rate


def _schedule(learning_rate) -> tuple[str, Message]:
    kind = learning_rate.WhichOneof("learning_rate")
    return kind, getattr(learning_rate, kind)


def peak_learning_rate(learning_rate) -> float:
    """The highest rate of a schedule (after warm-up)."""
    kind, schedule = _schedule(learning_rate)
    if kind == "cosine_decay_learning_rate":
        return schedule.learning_rate_base
    if kind == "constant_learning_rate":
        return schedule.learning_rate
    return schedule.initial_learning_rate  # manual_step and exponential_decay


def scale_learning_rate(learning_rate, factor: float) -> None:
    """Multiply every rate of the schedule by ``factor`` (keeps warm-up and step ratios)."""
    kind, schedule = _schedule(learning_rate)
    if kind == "cosine_decay_learning_rate":
        schedule.learning_rate_base *= factor
        schedule.warmup_learning_rate *= factor
    elif kind == "constant_learning_rate":
        schedule.learning_rate *= factor
    elif kind == "manual_step_learning_rate":
        schedule.initial_learning_rate *= factor
        for step in schedule.schedule:
            step.learning_rate *= factor
    elif kind == "exponential_decay_learning_rate":
        schedule.initial_learning_rate *= factor
        schedule.min_learning_rate *= factor
    else:
        raise ConfigError(f"unsupported learning rate schedule {kind!r}")


def scale_schedule(train_config, num_steps: int) -> None:
    """Set the total steps; the schedule's warm-up and step boundaries keep their fractions."""
    ratio = num_steps / train_config.num_steps
    train_config.num_steps = num_steps
    kind, schedule = _schedule(learning_rate_proto(train_config))
    if kind == "cosine_decay_learning_rate":
        schedule.total_steps = num_steps
        schedule.warmup_steps = min(round(schedule.warmup_steps * ratio), num_steps - 1)
    elif kind == "manual_step_learning_rate":
        previous = 0
        for step in schedule.schedule:
            step.step = max(round(step.step * ratio), previous + 1)
            previous = step.step
    elif kind == "exponential_decay_learning_rate":
        schedule.decay_steps = max(1, round(schedule.decay_steps * ratio))
        schedule.burnin_steps = round(schedule.burnin_steps * ratio)
