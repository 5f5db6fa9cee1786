"""Local backend: the trainer, the evaluator and TensorBoard as child processes of the launcher.

Each child writes into ``logs/<role>.log`` (appended across restarts and reruns) and runs in its
own session, with the Linux parent-death signal set: it dies with the launcher, even a launcher
killed with SIGKILL; SIGTERM, SIGHUP and Ctrl-C stop the children first. The launcher
watches them once a second: it echoes progress lines (with an ETA), restarts a crashed trainer
up to ``max_restarts`` times (it resumes from its latest checkpoint), never restarts one that
stopped on a NaN loss, and reports a dead process with the last lines of its log. When the
trainer is gone for good it marks the run ``stopped`` so the evaluator finishes too.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfod.errors import INTERRUPTED
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
    module_argv,
    require_gpus,
    role_env,
    roles,
)

STEP_LINE = re.compile(r"Step (\d+) per-step time ([\d.]+)s")
ECHOED = re.compile(r"^\[tfod |Traceback|Error|error:|TensorBoard \S+ at ")
TAIL_LINES = 25


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def log_path(run: RunFolder, role: str) -> Path:
    return {TRAIN: run.train_log, EVAL: run.eval_log, TENSORBOARD: run.tensorboard_log}[role]


@dataclass
class ManagedProcess:
    """One child process whose output goes to a log file; it can be started again."""

    role: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    reported: bool = False

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


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_line(line: str, target: int) -> str | None:
    """An OD API step line as ``step 200/1000, 0.350 s/step, ETA 4m40s``; None otherwise."""
    match = STEP_LINE.search(line)
    if not match:
        return None
    step, seconds = int(match.group(1)), float(match.group(2))
    eta = format_duration(max(target - step, 0) * seconds)
    return f"step {step}/{target}, {seconds:.3f} s/step, ETA {eta}"


def exit_code(trainer_code: int | None, evaluator_code: int | None, state: str | None) -> int:
    """0 when the trainer finished and the evaluator (if any) succeeded; 3 for a NaN loss."""
    if trainer_code == NAN_EXIT_CODE:
        return NAN_EXIT_CODE
    ok = trainer_code == 0 and state == FINISHED and evaluator_code in (None, 0)
    return 0 if ok else 1


def echo_progress(followers: dict[str, LogFollower], target: int,
                  echo: Callable[[str], None]) -> None:
    """Echo the new log lines worth seeing: step lines (as progress), tfod's own lines, errors."""
    for role, follower in followers.items():
        for line in follower.new_lines():
            progress = progress_line(line, target)
            if progress or ECHOED.search(line):
                echo(f"[{role}] {progress or line}")


def report(run: RunFolder, role: str, message: str, outcome: Outcome,
           echo: Callable[[str], None]) -> None:
    """Record a failure and show it with the last lines of the role's log."""
    outcome.messages.append(message)
    last = tail(log_path(run, role), TAIL_LINES)
    echo(f"[{role}] {message}. Last lines of {log_path(run, role)}:\n{last}")


@dataclass
class Outcome:
    """How a launch ended."""

    exit_code: int
    trainer_code: int | None = None
    evaluator_code: int | None = None
    restarts: int = 0
    messages: list[str] = field(default_factory=list)


class LocalLauncher:
    """Starts and watches the run's processes on this machine (see the module docstring)."""

    def __init__(self, spec: LaunchSpec, python: str = sys.executable,
                 echo: Callable[[str], None] = print, poll_seconds: float = 1.0):
        self.spec, self.echo, self.poll_seconds = spec, echo, poll_seconds
        self.run = spec.run
        self.processes = {
            role: ManagedProcess(role, module_argv(role, spec, python), role_env(role, spec),
                                 log_path(self.run, role))
            for role in roles(spec)
        }

    def commands(self) -> dict[str, list[str]]:
        return {role: process.argv for role, process in self.processes.items()}

    def environment(self) -> dict[str, dict[str, str]]:
        return {role: process.env for role, process in self.processes.items()}

    def launch(self) -> Outcome:
        """Run to the end (trainer finished or given up, evaluator done); Ctrl-C stops all."""
        require_gpus(self.spec)
        self.run.create()
        write_status(self.run, LAUNCHED, target=self.spec.num_steps)
        followers = {role: LogFollower(p.log) for role, p in self.processes.items()}
        try:
            with stop_signals_as_interrupt():
                for process in self.processes.values():
                    process.start()
                    self.echo(f"[{process.role}] started (pid {process.pid}), log {process.log}")
                return self._watch(followers)
        except KeyboardInterrupt:
            self.echo("interrupted: stopping every process (the latest checkpoint is kept)")
            self._stop_all()
            write_status(self.run, STOPPED, reason="interrupted")
            return Outcome(INTERRUPTED, messages=["interrupted"])
        finally:
            self._stop_all()

    def _watch(self, followers: dict[str, LogFollower]) -> Outcome:
        outcome = Outcome(exit_code=0)
        trainer, evaluator = self.processes[TRAIN], self.processes.get(EVAL)
        trainer_done = False
        while True:
            time.sleep(self.poll_seconds)
            self._echo_progress(followers)
            if not trainer_done:
                trainer_done = self._check_trainer(trainer, outcome)
            if evaluator is not None and outcome.evaluator_code is None:
                code = evaluator.poll()
                if code is not None:
                    outcome.evaluator_code = code
                    if code != 0:
                        self._report(EVAL, f"the evaluator exited with code {code}", outcome)
            self._check_tensorboard(outcome)
            if trainer_done and (evaluator is None or outcome.evaluator_code is not None):
                break
        self._echo_progress(followers)
        outcome.exit_code = exit_code(outcome.trainer_code, outcome.evaluator_code,
                                      read_status(self.run).get("state"))
        self._summary(outcome)
        return outcome

    def _check_tensorboard(self, outcome: Outcome) -> None:
        """Report once a TensorBoard that died (a busy port...); training goes on."""
        board = self.processes.get(TENSORBOARD)
        if board is not None and board.poll() is not None and not board.reported:
            board.reported = True
            self._report(TENSORBOARD, f"TensorBoard exited with code {board.poll()}", outcome)

    def _check_trainer(self, trainer: ManagedProcess, outcome: Outcome) -> bool:
        """Handle a trainer exit; True when the trainer is done for good."""
        code = trainer.poll()
        if code is None:
            return False
        outcome.trainer_code = code
        if code == 0:
            return True
        if code == NAN_EXIT_CODE:
            self._report(TRAIN, "training stopped: the loss is not finite (NaN/Inf); "
                         "not restarted", outcome)
            return True
        what = f"the trainer exited with code {code}" + (
            f" (signal {signal.Signals(-code).name})" if code < 0 and -code in
            signal.valid_signals() else "")
        if outcome.restarts < self.spec.max_restarts:
            outcome.restarts += 1
            self._report(TRAIN, f"{what}; restarting it ({outcome.restarts}/"
                         f"{self.spec.max_restarts}), it resumes from its latest checkpoint",
                         outcome)
            trainer.start()
            outcome.trainer_code = None
            return False
        self._report(TRAIN, f"{what}; no restart left (--max_restarts={self.spec.max_restarts})",
                     outcome)
        write_status(self.run, STOPPED, reason=what)
        return True

    def _report(self, role: str, message: str, outcome: Outcome) -> None:
        report(self.run, role, message, outcome, self.echo)

    def _echo_progress(self, followers: dict[str, LogFollower]) -> None:
        echo_progress(followers, self.spec.num_steps, self.echo)

    def _stop_all(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop()

    def _summary(self, outcome: Outcome) -> None:
        status = read_status(self.run)
        best = read_json(self.run.best_checkpoint)
        state = status.get("state", "unknown")
        line = f"trainer: {state} at step {status.get('step', '?')}/{self.spec.num_steps}"
        if outcome.restarts:
            line += f" after {outcome.restarts} restart(s)"
        if status.get("stopped_early"):
            line += f", stopped early ({status.get('reason')})"
        if best:
            line += (f"; best checkpoint {best['checkpoint']} (step {best['step']}) "
                     f"rsna/score {best['score']:.4f} at threshold {best['threshold']:.2f}")
        self.echo(line)
