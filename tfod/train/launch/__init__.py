"""Launchers: start the trainer, the evaluator and TensorBoard for one run folder.

:func:`launch_run` is what ``tfod-train`` calls: it writes the run's ``pipeline.config`` (from a
:class:`tfod.config.request.ConfigRequest`: built from a model name, or copied from
``--pipeline_config``), refuses a changed config on an existing run (which otherwise resumes),
checks the GPUs, locks the run folder (one launcher per run: a second one is refused with the
holder's pid), records ``launch.json`` and starts the ``local`` or ``docker`` backend, or with
``dry_run`` prints the run-folder plan and the exact commands and starts nothing (and refuses,
exit 2, what the launch would refuse: a changed config).
"""
from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tfod.runfolder import RunFolder
from tfod.train.launch.base import Launcher
from tfod.train.launch.common import (
    LaunchError,
    LaunchSpec,
    RunLocked,
    config_change,
    config_inputs,
    config_steps,
)
from tfod.train.launch.docker import DockerLauncher
from tfod.train.launch.local import LocalLauncher
from tfod.train.settings import TrainSettings

if TYPE_CHECKING:  # the request is the config stage's; the launcher only calls .write()
    from tfod.config.request import ConfigRequest

BACKENDS: dict[str, type[Launcher]] = {launcher.name: launcher
                                       for launcher in (LocalLauncher, DockerLauncher)}

__all__ = ["BACKENDS", "LaunchError", "LaunchSpec", "RunLocked", "default_run_dir",
           "launch_run", "make_launcher", "plan_lines"]


def default_run_dir(request: ConfigRequest) -> Path:
    """``runs/<model>-fold<k>``; for ``--pipeline_config`` inside a run folder, that folder."""
    if request.model:
        return Path("runs") / f"{request.model}-fold{request.fold}"
    folder = Path(request.pipeline_config).resolve().parent
    if RunFolder(folder).launch_json.exists():
        return folder
    raise LaunchError(f"--pipeline_config {request.pipeline_config} is not in a run folder: "
                      "pass --run_dir")


def make_launcher(spec: LaunchSpec, backend: str, echo: Callable[[str], None] = print
                  ) -> Launcher:
    if backend not in BACKENDS:
        raise LaunchError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend](spec, echo=echo)


def plan_lines(spec: LaunchSpec, launcher: Launcher, change: str | None) -> list[str]:
    """The --dry_run report: run folder, config status, mounts and the exact commands."""
    run = spec.run
    lines = run.plan()
    if change:
        lines.append("pipeline.config: differs from the run's: training cannot resume (below)")
    elif run.pipeline_config.exists():
        lines.append("pipeline.config: identical to the run's: training resumes")
    lines.append(f"steps: {spec.num_steps}, checkpoint every {spec.settings.checkpoint_every}, "
                 f"backend {launcher.name}, gpus {spec.gpus or 'none (CPU)'}, "
                 f"evaluator {spec.eval_device}, max restarts {spec.max_restarts}"
                 + (f", early stopping: patience {spec.settings.patience}, min_delta "
                    f"{spec.settings.min_delta}" if spec.settings.patience else ""))
    lines.extend(launcher.plan_notes())
    lines.append("commands:")
    environments = launcher.environment()
    for role, argv in launcher.commands().items():
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in environments.get(role, {}).items())
        lines.append(f"  [{role}] " + (env + " " if env else "") + shlex.join(argv))
    return lines


def launch_run(request: ConfigRequest, run_dir: str | Path | None = None, backend: str = "local",
               dry_run: bool = False, flags: dict | None = None,
               echo: Callable[[str], None] = print, settings: dict | None = None,
               **options) -> int:
    """Launch (or with ``dry_run`` plan) one training run; return the exit code.

    ``settings`` are :class:`~tfod.train.settings.TrainSettings` fields other than
    ``num_steps`` (which comes from the request, else the config); ``options`` are
    :class:`LaunchSpec` fields (``gpus``, ``eval_device``, ``tensorboard_port``,
    ``max_restarts``, ``image``...).
    """
    run = RunFolder(run_dir or default_run_dir(request))
    with tempfile.TemporaryDirectory(prefix="tfod-config-") as tmp:
        candidate = request.write(Path(tmp) / "pipeline.config")
        num_steps = request.num_steps or config_steps(candidate)
        if not num_steps:
            raise LaunchError("no step count: pass --num_steps or set train_config.num_steps")
        spec = LaunchSpec(run_dir=run.root, settings=TrainSettings(num_steps, **(settings or {})),
                          read_only_inputs=config_inputs(candidate), **options)
        launcher = make_launcher(spec, backend, echo)
        if dry_run:
            change = config_change(run, candidate)
            echo("\n".join(plan_lines(spec, launcher, change)))
            if change:  # what the launch would refuse, the plan refuses too (exit 2)
                raise LaunchError(change)
            return 0
        return launcher.launch(candidate, flags).exit_code
