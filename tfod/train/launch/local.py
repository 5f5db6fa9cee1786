"""Local backend: the trainer, the evaluator and TensorBoard as child processes of the launcher.

Each child writes into ``logs/<role>.log`` (appended across restarts and reruns) and runs in its
own session, with the Linux parent-death signal set: it dies with the launcher, even a launcher
killed with SIGKILL. With ``num_workers > 1`` (and no ``TF_CONFIG`` of the user's) the trainer
is that many worker processes on 127.0.0.1, each with its own ``TF_CONFIG``
(:func:`tfod.train.multiworker.worker_tf_configs`); worker 0, the chief, logs to
``logs/train.log``, worker i to ``logs/train-worker<i>.log``. They start, fail and restart
together. The watch loop and restart policy are :class:`~tfod.train.launch.base.Launcher`'s.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfod.train.launch.base import Launcher, log_path
from tfod.train.launch.common import TRAIN, LaunchSpec, module_argv, role_env, roles
from tfod.train.multiworker import free_ports, worker_tf_configs

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` for a child that must not outlive the launcher, even one killed with
    SIGKILL (no handler runs then): Linux sends the child SIGKILL when its parent thread ends.
    The child checks its parent once more in case the launcher died before the prctl call."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@dataclass
class ManagedProcess:
    """One child process whose output goes to a log file; it can be started again."""

    role: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log, "ab") as out:
            header = (f"\n=== tfod launcher: {self.role} start {self.starts} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.argv)}\n")
            out.write(header.encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
            )

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the child's process group (its own session), SIGKILL after ``grace``
        seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def local_workers(spec: LaunchSpec) -> int:
    """How many trainer processes this launcher starts: one with the user's ``TF_CONFIG``
    (a worker of a cluster they run), else ``num_workers`` on this machine."""
    return 1 if "TF_CONFIG" in os.environ else spec.settings.num_workers


class LocalLauncher(Launcher):
    """Starts and watches the run's processes on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, spec: LaunchSpec, python: str = sys.executable,
                 echo: Callable[[str], None] = print, poll_seconds: float = 1.0):
        super().__init__(spec, echo, poll_seconds)
        self.processes: dict[str, list[ManagedProcess]] = {
            role: [ManagedProcess(role, module_argv(role, spec, python), role_env(role, spec),
                                  log_path(self.run, role))]
            for role in roles(spec)
        }
        workers = local_workers(spec)
        if workers > 1:
            trainer = self.processes[TRAIN][0]
            self.processes[TRAIN] = [
                ManagedProcess(TRAIN, trainer.argv, {**trainer.env, "TF_CONFIG": tf_config},
                               trainer.log if index == 0 else
                               self.run.logs / f"train-worker{index}.log")
                for index, tf_config in enumerate(
                    worker_tf_configs(workers, ports=free_ports(workers)))]

    def commands(self) -> dict[str, list[str]]:
        return {role: processes[0].argv for role, processes in self.processes.items()}

    def environment(self) -> dict[str, dict[str, str]]:
        return {role: processes[0].env for role, processes in self.processes.items()}

    def start(self, role: str) -> None:
        for process in self.processes[role]:
            process.start()
            task = json.loads(process.env.get("TF_CONFIG", "{}")).get("task")
            worker = f" worker {task['index']}" if task and len(self.processes[role]) > 1 else ""
            self.echo(f"[{role}]{worker} started (pid {process.pid}), log {process.log}")

    def restart(self, role: str) -> None:
        for process in self.processes[role]:
            process.stop()
        self.start(role)

    def exit_code(self, role: str) -> int | None:
        """A worker's error ends the trainer (the others are stopped: they would wait for it
        forever); the trainer is done when every worker is."""
        codes = [process.poll() for process in self.processes[role]]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            for process in self.processes[role]:
                process.stop()
            return failed[0]
        return None if None in codes else 0

    def describe_exit(self, role: str, code: int) -> str:
        who = {TRAIN: "the trainer", "eval": "the evaluator"}.get(role, f"the {role} process")
        return f"{who} exited with code {code}" + (
            f" (signal {signal.Signals(-code).name})"
            if code < 0 and -code in signal.valid_signals() else "")

    def stop_all(self) -> None:
        for processes in reversed(self.processes.values()):
            for process in processes:
                process.stop()

    def cleanup(self) -> None:
        self.stop_all()
