"""What a tool asks of the configure stage: :class:`ConfigRequest`. Importing it imports no
TensorFlow, so tools parse their flags and refuse bad ones before TensorFlow loads."""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from tfod import cli
from tfod.config import ConfigError


@dataclasses.dataclass
class ConfigRequest:
    """Where a run's config comes from: a model of the registry and a fold of a converted folder
    (built by :func:`tfod.config.pipeline.build_config`), or an existing ``pipeline_config``
    (copied as it is).

    The one description of a config request: ``tfod-config`` and ``tfod-train`` fill it from
    the flag group :func:`tfod.cli.define_config_flags`, the demo and the launcher take it.
    """

    model: str | None = None
    data_dir: str | None = None
    fold: int = 0
    image_size: int | None = None
    batch_size: int | None = None
    num_steps: int | None = None
    learning_rate: float | None = None
    fine_tune_checkpoint: str | None = None
    overrides: Sequence[str] = dataclasses.field(default_factory=tuple)
    pipeline_config: str | None = None
    augmentations: Sequence[str] | None = None  # None: the model's own

    def __post_init__(self):
        self.overrides = tuple(self.overrides)  # flags and JSON give lists: one form to compare
        if self.augmentations is not None:
            self.augmentations = tuple(self.augmentations)
        if bool(self.model) == bool(self.pipeline_config):
            raise ConfigError("give either --model (with --data_dir and --fold) or "
                              "--pipeline_config")
        if self.model and not self.data_dir:
            raise ConfigError("--model needs --data_dir (a converted folder)")

    @classmethod
    def from_flags(cls, group: cli.ConfigFlags) -> ConfigRequest:
        """The request that the flag group of :func:`tfod.cli.define_config_flags` asks for."""
        if "pipeline_config" not in group.holders:
            cli.require(group.holders["model"], group.holders["data_dir"])
        elif group.pipeline_config and not group.model:  # resume a run's config as it was
            return cls(pipeline_config=group.pipeline_config, num_steps=group.num_steps)
        return cls(  # checks that --model and --pipeline_config are not both given
            model=group.model, data_dir=group.data_dir, fold=group.fold,
            image_size=group.image_size, batch_size=group.batch_size, num_steps=group.num_steps,
            learning_rate=group.learning_rate, fine_tune_checkpoint=group.fine_tune_checkpoint,
            overrides=group.override, pipeline_config=group.values().get("pipeline_config"),
            augmentations=group.augmentations)

    def write(self, output: str | os.PathLike) -> Path:
        """Write the asked-for config to ``output`` (a ``.config`` file, or a folder)."""
        if self.pipeline_config:
            source = Path(self.pipeline_config)
            if not source.is_file():
                raise ConfigError(f"--pipeline_config {source} does not exist")
            from tfod.config.pipeline import read_configs

            read_configs(source)  # a damaged file is named here, not as the run's copy
            output = Path(output)
            if output.suffix != ".config":
                output = output / "pipeline.config"
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, output)
            return output
        from tfod.config.pipeline import build_config  # TensorFlow and the OD API: only here

        return build_config(
            self.model, self.data_dir, self.fold, output, image_size=self.image_size,
            batch_size=self.batch_size, num_steps=self.num_steps,
            learning_rate=self.learning_rate, fine_tune_checkpoint=self.fine_tune_checkpoint,
            overrides=self.overrides, augmentations=self.augmentations,
        )
