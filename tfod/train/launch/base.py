"""The launcher of one run: what every backend shares.

:class:`Launcher` owns the run lock, the run's ``pipeline.config`` and ``settings.json``
written into the run folder, ``launch.json``, the watch loop and the restart policy:

* once a poll it shows the trainer's progress from its heartbeat (``train_status.json``:
  step, target, seconds per step) every ``log_every`` steps, and echoes the evaluator's own
  lines and any error line of either log;
* a trainer that exited with an error is started again (it resumes from its latest
  checkpoint) up to ``max_restarts`` times, never one that stopped on a NaN loss (exit 3);
  when it is gone for good the run is marked ``stopped`` so the evaluator finishes too;
* SIGTERM, SIGHUP and Ctrl-C stop every process first (exit 130).

A backend (:mod:`.local`, :mod:`.docker`) supplies only how a role's processes start, restart,
end and stop: :meth:`Launcher.prepare`, :meth:`start`, :meth:`restart`, :meth:`exit_code`,
:meth:`describe_exit`, :meth:`stop_all`, :meth:`cleanup` and :meth:`commands`.
"""
from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfod.errors import INTERRUPTED
from tfod.progress import step_line
from tfod.runfolder import (
    FINISHED,
    LAUNCHED,
    STOPPED,
    RunFolder,
    read_json,
    read_status,
    tail,
    write_status,
)
from tfod.train.launch.common import (
    EVAL,
    NAN_EXIT_CODE,
    TENSORBOARD,
    TRAIN,
    LaunchSpec,
    RunLock,
    adopt_config,
    require_gpus,
    write_launch_record,
)
from tfod.train.settings import TrainSettings

ECHOED = {TRAIN: r"Traceback|Error|error:", EVAL: r"^\[tfod |Traceback|Error|error:",
          TENSORBOARD: r"Traceback|Error|error:|TensorBoard \S+ at "}
# TensorFlow's native log lines below FATAL (e.g. "E0000 00:00:1796225894.671307 ...
# failed call to cuInit" on a machine without a GPU) stay in the role's log file, unechoed.
NATIVE_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")
TAIL_LINES = 25
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class Outcome:
    """How a launch ended."""

    exit_code: int
    trainer_code: int | None = None
    evaluator_code: int | None = None
    restarts: int = 0
    messages: list[str] = field(default_factory=list)


def exit_code(trainer_code: int | None, evaluator_code: int | None, state: str | None) -> int:
    """0 when the trainer finished and the evaluator (if any) succeeded; 3 for a NaN loss."""
    if trainer_code == NAN_EXIT_CODE:
        return NAN_EXIT_CODE
    ok = trainer_code == 0 and state == FINISHED and evaluator_code in (None, 0)
    return 0 if ok else 1


def log_path(run: RunFolder, role: str) -> Path:
    return {TRAIN: run.train_log, EVAL: run.eval_log, TENSORBOARD: run.tensorboard_log}[role]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """Treat SIGTERM and SIGHUP (a closed terminal) like Ctrl-C while launching, so a launcher
    told to stop stops its children first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class LogFollower:
    """Reads the lines appended to a log file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = ""

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines


class ProgressFromHeartbeat:
    """The trainer's progress line from ``train_status.json``, once every ``every`` steps and
    at the target."""

    def __init__(self, run: RunFolder, every: int):
        self.run, self.every = run, every
        self.shown = -1

    def line(self) -> str | None:
        status = read_status(self.run)
        step, target = status.get("step"), status.get("target")
        if not isinstance(step, int) or not isinstance(target, int) or step <= self.shown:
            return None
        if self.shown >= 0 and step - self.shown < self.every and step < target:
            return None
        self.shown = step
        return step_line(step, target, float(status.get("seconds_per_step") or 0.0))


class Launcher:
    """Launches and watches one run (see the module docstring); subclassed per backend."""

    name = ""  # the backend's --backend name

    def __init__(self, spec: LaunchSpec, echo: Callable[[str], None] = print,
                 poll_seconds: float = 1.0):
        self.spec, self.echo, self.poll_seconds = spec, echo, poll_seconds
        self.run = spec.run

    # ------------------------------------------------------------------ what a backend does

    def commands(self) -> dict[str, list[str]]:
        """The exact command of each role (for ``launch.json`` and ``--dry_run``)."""
        raise NotImplementedError

    def environment(self) -> dict[str, dict[str, str]]:
        """Variables each role gets on top of the launcher's (shown by ``--dry_run``)."""
        return {}

    def plan_notes(self) -> list[str]:
        """What else ``--dry_run`` shows of this backend (Docker: the read-only mounts)."""
        return []

    def prepare(self) -> None:
        """Checks and clean-up before the run folder is locked (Docker: the daemon)."""

    def start(self, role: str) -> None:
        raise NotImplementedError

    def restart(self, role: str) -> None:
        raise NotImplementedError

    def exit_code(self, role: str) -> int | None:
        """The role's exit code; None while it runs (or has not started yet)."""
        raise NotImplementedError

    def describe_exit(self, role: str, code: int) -> str:
        return f"the {role} process exited with code {code}"

    def stop_all(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """After the watch, however it ended (stop log followers, remove TensorBoard...)."""

    def launch_record_image(self) -> str | None:
        return None

    # -------------------------------------------------------------------- the shared part

    def roles(self) -> list[str]:
        return list(self.commands())

    def launch(self, config: Path, flags: dict | None = None) -> Outcome:
        """Lock the run folder, adopt ``config`` and the settings, record the launch, start
        every role and watch them to the end."""
        require_gpus(self.spec)  # before anything: a GPU command never runs without its GPU
        self.prepare()
        with RunLock(self.run) as lock:
            if lock.took_over:
                self.echo(f"took over {lock.path} from launcher pid {lock.took_over}, "
                          "which is gone")
            adopt_config(self.run, config)
            self.run.create()
            self._adopt_settings()
            write_launch_record(self.spec, self.name, self.commands(), flags or {},
                                image=self.launch_record_image())
            return self._start_and_watch()

    def _adopt_settings(self) -> None:
        """Write the run's settings; say which changed since its last launch."""
        earlier = TrainSettings.read(self.run) if self.run.settings.exists() else None
        if changes := self.spec.settings.changes(earlier):
            self.echo(f"settings changed since the last launch ({self.run.settings}): "
                      + "; ".join(changes))
        self.spec.settings.write(self.run)

    def _start_and_watch(self) -> Outcome:
        write_status(self.run, LAUNCHED, target=self.spec.num_steps)
        followers = {role: LogFollower(log_path(self.run, role)) for role in self.roles()}
        try:
            with stop_signals_as_interrupt():
                for role in self.roles():
                    self.start(role)
                return self._watch(followers)
        except KeyboardInterrupt:
            self.echo("interrupted: stopping every process (the latest checkpoint is kept)")
            self.stop_all()
            write_status(self.run, STOPPED, reason="interrupted")
            return Outcome(INTERRUPTED, messages=["interrupted"])
        finally:
            self.cleanup()

    def _watch(self, followers: dict[str, LogFollower]) -> Outcome:
        outcome = Outcome(exit_code=0)
        progress = ProgressFromHeartbeat(self.run, self.spec.settings.log_every)
        echoed = {role: re.compile(pattern) for role, pattern in ECHOED.items()}
        watched = [role for role in (TRAIN, EVAL) if role in self.roles()]
        done: dict[str, int] = {}
        tensorboard_reported = False
        while True:
            time.sleep(self.poll_seconds)
            self._echo(followers, echoed, progress)
            for role in watched:
                if role not in done and (code := self.exit_code(role)) is not None:
                    if role == EVAL and code:
                        self._report(EVAL, self.describe_exit(EVAL, code), outcome)
                    if role != TRAIN or not self._restarted(code, outcome):
                        done[role] = code
            if TENSORBOARD in self.roles() and not tensorboard_reported:
                tensorboard_reported = self._check_tensorboard(outcome)
            if all(role in done for role in watched):
                break
        self._echo(followers, echoed, progress)
        outcome.trainer_code, outcome.evaluator_code = done[TRAIN], done.get(EVAL)
        outcome.exit_code = exit_code(outcome.trainer_code, outcome.evaluator_code,
                                      read_status(self.run).get("state"))
        self._summary(outcome)
        return outcome

    def _restarted(self, code: int, outcome: Outcome) -> bool:
        """The restart policy for a trainer that exited with ``code``: True when restarted."""
        if code == 0:
            return False
        if code == NAN_EXIT_CODE:
            self._report(TRAIN, "training stopped: the loss is not finite (NaN/Inf); "
                         "not restarted", outcome)
            return False
        what = self.describe_exit(TRAIN, code)
        if outcome.restarts >= self.spec.max_restarts:
            self._report(TRAIN, f"{what}; no restart left (--max_restarts="
                         f"{self.spec.max_restarts})", outcome)
            write_status(self.run, STOPPED, reason=what)
            return False
        outcome.restarts += 1
        self._report(TRAIN, f"{what}; restarting it ({outcome.restarts}/"
                     f"{self.spec.max_restarts}), it resumes from its latest checkpoint", outcome)
        self.restart(TRAIN)
        return True

    def _check_tensorboard(self, outcome: Outcome) -> bool:
        """Report a TensorBoard that died (a busy port...) once; training goes on."""
        code = self.exit_code(TENSORBOARD)
        if code is None:
            return False
        self._report(TENSORBOARD, f"TensorBoard exited with code {code}", outcome)
        return True

    def _echo(self, followers: dict[str, LogFollower], echoed: dict,
              progress: ProgressFromHeartbeat) -> None:
        for role, follower in followers.items():
            for line in follower.new_lines():
                if echoed[role].search(line) and not NATIVE_LOG_LINE.match(line):
                    self.echo(f"[{role}] {line}")
        if line := progress.line():
            self.echo(f"[{TRAIN}] {line}")

    def _report(self, role: str, message: str, outcome: Outcome) -> None:
        """Record a failure and show it with the last lines of the role's log."""
        outcome.messages.append(message)
        last = tail(log_path(self.run, role), TAIL_LINES)
        self.echo(f"[{role}] {message}. Last lines of {log_path(self.run, role)}:\n{last}")

    def _summary(self, outcome: Outcome) -> None:
        status = read_status(self.run)
        best = read_json(self.run.best_checkpoint)
        line = (f"trainer: {status.get('state', 'unknown')} at step {status.get('step', '?')}/"
                f"{self.spec.num_steps}")
        if outcome.restarts:
            line += f" after {outcome.restarts} restart(s)"
        if status.get("stopped_early"):
            line += f", stopped early ({status.get('reason')})"
        if best:
            line += (f"; best checkpoint {best['checkpoint']} (step {best['step']}) "
                     f"rsna/score {best['score']:.4f} at threshold {best['threshold']:.2f}")
        self.echo(line)
