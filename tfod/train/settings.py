"""A run's training settings: what the trainer and the evaluator do besides what the
``pipeline.config`` says, each with its one default.

``tfod-train`` defines its flags from :class:`TrainSettings` (:func:`define_flags`), the
launcher writes the settings as ``settings.json`` beside the run's ``pipeline.config``, and the
trainer and evaluator processes read them from there (``python -m tfod.train train|eval
--run_dir``), as detectron2 writes its ``config.yaml`` into the output folder. A relaunch says
which settings changed since the run's last launch.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from tfod import cli
from tfod.errors import BadInput
from tfod.runfolder import RunFolder, read_json, write_json


def _setting(default, help_text: str, lower=None, upper=None, positive: bool = False):
    """A field with its default, its flag's help and the range its flag accepts."""
    return field(default=default, metadata={"help": help_text, "lower": lower, "upper": upper,
                                            "positive": positive})


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one run; ``num_steps`` is the step to train to."""

    num_steps: int
    checkpoint_every: int = _setting(1000, "Steps between checkpoints (each one is evaluated).",
                                     lower=1)
    max_to_keep: int = _setting(7, "Checkpoints kept (the best is copied to best/ anyway).",
                                lower=1)
    log_every: int = _setting(100, "Steps between progress lines.", lower=1)
    num_workers: int = _setting(1, "Training processes (MultiWorkerMirroredStrategy if > 1): "
                                "the local launcher starts them all on 127.0.0.1; with "
                                "TF_CONFIG set, this launcher runs that one worker.", lower=1)
    cpu_replicas: int = _setting(0, "Mirror over this many logical CPU devices: the several-GPU "
                                 "path without GPUs (for tests).", lower=0)
    eval_poll_seconds: float = _setting(5.0, "How often the evaluator looks for a new "
                                        "checkpoint.", positive=True)
    trainer_timeout: float = _setting(300.0, "The evaluator stops after this many seconds "
                                      "without a new checkpoint or a trainer heartbeat.",
                                      positive=True)
    patience: int = _setting(0, "Stop after this many evaluations without a better rsna/score; "
                             "0: never.", lower=0)
    min_delta: float = _setting(0.0, "A better rsna/score beats the best by more than this.",
                                lower=0.0, upper=1.0)

    def __post_init__(self):
        for name in ("num_steps", "checkpoint_every", "max_to_keep", "log_every", "num_workers"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.cpu_replicas < 0 or self.patience < 0:
            raise BadInput(f"--cpu_replicas and --patience must be >= 0, got "
                           f"{self.cpu_replicas} and {self.patience}")
        for name in ("eval_poll_seconds", "trainer_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise BadInput(f"--{name} must be a positive number of seconds, got {value}")
        if not 0 <= self.min_delta < 1:
            raise BadInput(f"--min_delta must be in [0, 1), got {self.min_delta}")

    def write(self, run: RunFolder) -> None:
        write_json(run.settings, dataclasses.asdict(self))

    @classmethod
    def read(cls, run: RunFolder) -> TrainSettings:
        """The settings written into ``run``; BadInput naming the file when missing or wrong."""
        data = read_json(run.settings)
        if not isinstance(data, dict):
            raise BadInput("no training settings (missing, or not a JSON object): the launcher "
                           "writes them; start the run with tfod-train", run.settings)
        names = {field.name for field in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - names):
            raise BadInput(f"unknown settings {', '.join(unknown)}", run.settings)
        try:
            return cls(**data)
        except TypeError as error:
            raise BadInput(str(error), run.settings) from None
        except BadInput as error:
            raise BadInput(error.reason, run.settings) from None

    def changes(self, earlier: TrainSettings | None) -> list[str]:
        """``name: old -> new`` for each setting that differs from ``earlier``."""
        if earlier is None:
            return []
        return [f"{name}: {old} -> {new}" for name, old, new in (
            (field.name, getattr(earlier, field.name), getattr(self, field.name))
            for field in dataclasses.fields(self)) if old != new]


def define_flags(tool_module: str) -> Callable[[], dict]:
    """Define one absl flag per setting but ``num_steps`` (the config flag group has it), with
    the setting's default and help, as flags of ``tool_module`` (its ``--help`` lists them);
    returns a function giving their values as a dict."""
    from absl import flags

    if tool_module == "__main__":  # under python -m: absl names the main module by its path
        tool_module = sys.argv[0]
    definers = {int: flags.DEFINE_integer, float: flags.DEFINE_float}
    holders = {}
    for item in dataclasses.fields(TrainSettings):
        if item.name == "num_steps":
            continue
        meta = item.metadata
        holders[item.name] = definers[type(item.default)](
            item.name, item.default, meta["help"], lower_bound=meta["lower"],
            upper_bound=meta["upper"], module_name=tool_module)
        if meta["positive"]:
            cli.require_positive(holders[item.name])
    return lambda: {name: holder.value for name, holder in holders.items()}
