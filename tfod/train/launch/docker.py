"""Docker backend: the trainer, the evaluator and TensorBoard as detached containers.

Every container runs the image built from ``docker/Dockerfile`` as the caller's ``uid:gid``,
with the run folder mounted read-write and the data and fine-tune checkpoint folders mounted
read-only, each at the same absolute path as on the host, so the pipeline.config's paths hold
inside. The trainer gets ``--gpus``; a CPU evaluator gets ``CUDA_VISIBLE_DEVICES=-1``;
TensorBoard publishes its port on 127.0.0.1 unless another address is asked. The launcher
streams ``docker logs`` into ``logs/`` and reports exit codes, through the docker CLI.

Restarts are the launcher's, not a Docker restart policy: a trainer container that exited with
an error is started again (``docker start``: it resumes from its latest checkpoint) up to
``max_restarts`` times, but never one that stopped on a NaN loss (exit code 3), as locally.
When a launch fails after a container started (a later ``docker run`` refused, say a port in
use), every container it started is removed before the error is reported.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tfod.errors import INTERRUPTED
from tfod.runfolder import LAUNCHED, STOPPED, read_json, read_status, write_status
from tfod.train.launch.common import (
    EVAL,
    NAN_EXIT_CODE,
    TENSORBOARD,
    TRAIN,
    LaunchError,
    LaunchSpec,
    module_argv,
    parse_eval_device,
    require_gpus,
    role_env,
    roles,
)
from tfod.train.launch.local import (
    LogFollower,
    Outcome,
    echo_progress,
    exit_code,
    log_path,
    report,
    stop_signals_as_interrupt,
)

CONTAINER_ENV = {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"}  # any uid, no home needed


def container_name(spec: LaunchSpec, role: str) -> str:
    """``tfod-<run name>-<hash of its path>-<role>``: one set of containers per run folder."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", spec.run_dir.name).strip("-.") or "run"
    digest = hashlib.sha1(str(spec.run_dir).encode()).hexdigest()[:8]
    return f"tfod-{slug}-{digest}-{role}"


def gpus_argument(gpus: str) -> str:
    """Docker's ``--gpus`` value: ``all``, ``device=0`` or ``"device=0,1"`` (quoted: a comma
    would otherwise split the option)."""
    return gpus if gpus == "all" else (f'"device={gpus}"' if "," in gpus else f"device={gpus}")


def role_gpus(spec: LaunchSpec, role: str) -> str:
    if role == TRAIN:
        return spec.gpus
    kind, index = parse_eval_device(spec.eval_device)
    return index if role == EVAL and kind == "gpu" else ""


def container_env(spec: LaunchSpec, role: str) -> dict[str, str]:
    """The role's environment inside its container. Docker renumbers the GPUs it passes from
    0, so a GPU role keeps them all visible; a CPU role hides any with -1."""
    env = {**role_env(role, spec), **CONTAINER_ENV}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if role in (TRAIN, EVAL) and not role_gpus(spec, role):
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def docker_run_argv(spec: LaunchSpec, role: str, user: str | None = None) -> list[str]:
    """The exact ``docker run`` command of a role."""
    run = spec.run
    user = user or f"{os.getuid()}:{os.getgid()}"
    argv = ["docker", "run", "--detach", "--name", container_name(spec, role),
            "--label", f"tfod.run={run.root}", "--label", f"tfod.role={role}", "--user", user]
    if role == TRAIN and spec.num_workers > 1:
        argv += ["--network", "host"]  # workers reach each other at the TF_CONFIG addresses
    gpus = role_gpus(spec, role)
    if gpus:
        argv += ["--gpus", gpus_argument(gpus)]
    if role in (TRAIN, EVAL):
        argv += ["--shm-size", spec.shm_size]
    for name, value in container_env(spec, role).items():
        argv += ["--env", f"{name}={value}"]
    if role != TENSORBOARD:
        for path in spec.read_only_inputs:
            argv += ["--volume", f"{path}:{path}:ro"]
    argv += ["--volume", f"{run.root}:{run.root}:{'ro' if role == TENSORBOARD else 'rw'}"]
    if role == TENSORBOARD:
        port = spec.tensorboard_port
        argv += ["--publish", f"{spec.tensorboard_host}:{port}:{port}"]
    argv += ["--workdir", str(run.root), spec.image]
    return argv + module_argv(role, spec, python="python", bind_all=role == TENSORBOARD)


def docker_commands(spec: LaunchSpec, user: str | None = None) -> dict[str, list[str]]:
    return {role: docker_run_argv(spec, role, user) for role in roles(spec)}


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise LaunchError(f"`docker {' '.join(args)}` failed ({done.returncode}): "
                          f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def require_docker() -> str:
    """The Docker server version; a clear error without the CLI or a reachable daemon."""
    if shutil.which("docker") is None:
        raise LaunchError("--backend=docker needs the docker CLI on PATH (https://docs.docker.com/"
                          "engine/install/); or use --backend=local")
    done = _docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
    if done.returncode != 0:
        raise LaunchError("the Docker daemon is not reachable: "
                          f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def container_state(name: str) -> tuple[str, int, int] | None:
    """(status, exit code, restart count) of a container; None when there is none."""
    done = _docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
                   name, check=False, timeout=30)
    if done.returncode != 0:
        return None
    status, code, restarts = done.stdout.split()
    return status, int(code), int(restarts)


class ContainerLogs:
    """``docker logs --follow`` into a log file, followed again after a restart (from the last
    time it was seen following, so at most a poll interval of lines repeats)."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.process: subprocess.Popen | None = None
        self.seen_following: str | None = None

    def ensure_following(self) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.process is not None and self.process.poll() is None:
            self.seen_following = now
            return
        argv = ["docker", "logs", "--follow", self.name]
        if self.seen_following:
            argv[2:2] = ["--since", self.seen_following]
        self.seen_following = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class DockerLauncher:
    """Starts the run's containers and watches them until the trainer and evaluator end."""

    def __init__(self, spec: LaunchSpec, echo: Callable[[str], None] = print,
                 poll_seconds: float = 2.0, user: str | None = None):
        self.spec, self.echo, self.poll_seconds = spec, echo, poll_seconds
        self.run = spec.run
        self.names = {role: container_name(spec, role) for role in roles(spec)}
        self.argv = docker_commands(spec, user)

    def commands(self) -> dict[str, list[str]]:
        return dict(self.argv)

    def launch(self) -> Outcome:
        require_gpus(self.spec)  # before any docker call: a GPU command never runs without one
        require_docker()
        self.run.create()
        self._remove_finished_containers()
        write_status(self.run, LAUNCHED, target=self.spec.num_steps)
        followers = {role: LogFollower(log_path(self.run, role)) for role in self.argv}
        logs: dict[str, ContainerLogs] = {}
        try:
            with stop_signals_as_interrupt():
                self._start_containers(logs)
                return self._watch(logs, followers)
        except KeyboardInterrupt:
            self.echo("interrupted: stopping the containers (the latest checkpoint is kept)")
            for name in self.names.values():
                _docker("stop", name, check=False)
            write_status(self.run, STOPPED, reason="interrupted")
            return Outcome(INTERRUPTED, messages=["interrupted"])
        finally:
            if TENSORBOARD in self.names:
                _docker("rm", "--force", self.names[TENSORBOARD], check=False)
            for follower in logs.values():
                follower.stop()

    def _start_containers(self, logs: dict[str, ContainerLogs]) -> None:
        """``docker run`` every role; on any failure remove what was started, then raise."""
        tried = []
        try:
            for role, argv in self.argv.items():
                tried.append(self.names[role])  # a failed `run` can leave a created container
                container = _docker(*argv[1:]).stdout.strip()
                self.echo(f"[{role}] container {self.names[role]} ({container[:12]}), "
                          f"log {log_path(self.run, role)}")
                logs[role] = ContainerLogs(self.names[role], log_path(self.run, role))
                logs[role].ensure_following()
        except BaseException:
            for follower in logs.values():
                follower.stop()
            if tried:
                _docker("rm", "--force", *tried, check=False)
            write_status(self.run, STOPPED, reason="launch failed")
            raise

    def _remove_finished_containers(self) -> None:
        for role, name in self.names.items():
            state = container_state(name)
            if state is None:
                continue
            if state[0] in ("running", "restarting") and role != TENSORBOARD:
                raise LaunchError(f"container {name} is already running this run folder; "
                                  f"watch it with `docker logs -f {name}` or stop it first")
            _docker("rm", "--force", name)

    def _watch(self, logs: dict[str, ContainerLogs], followers: dict[str, LogFollower]
               ) -> Outcome:
        outcome = Outcome(exit_code=0)
        done: dict[str, int] = {}
        while True:
            time.sleep(self.poll_seconds)
            echo_progress(followers, self.spec.num_steps, self.echo)
            for role in (TRAIN, EVAL):
                if role in logs and role not in done:
                    self._check(role, logs[role], done, outcome)
            if TRAIN in done and (EVAL not in logs or EVAL in done):
                break
        echo_progress(followers, self.spec.num_steps, self.echo)
        outcome.trainer_code, outcome.evaluator_code = done[TRAIN], done.get(EVAL)
        outcome.exit_code = exit_code(done[TRAIN], done.get(EVAL),
                                      read_status(self.run).get("state"))
        best = read_json(self.run.best_checkpoint)
        self.echo(f"trainer exit code {done[TRAIN]} after {outcome.restarts} restart(s)"
                  + (f"; best {best['checkpoint']} rsna/score {best['score']:.4f}" if best else ""))
        return outcome

    def _check(self, role: str, logs: ContainerLogs, done: dict, outcome: Outcome) -> None:
        state = container_state(self.names[role])
        if state is None:
            done[role] = 1
            self._report(role, f"container {self.names[role]} disappeared", outcome)
            return
        status, code, _ = state
        if status in ("running", "restarting"):
            if status == "running":
                logs.ensure_following()
            return
        if status not in ("exited", "dead"):
            return  # created: not started yet
        if code == 0 or role != TRAIN:
            done[role] = code
            if code != 0:
                self._report(role, f"container {self.names[role]} exited with code {code}",
                             outcome)
            return
        if self._restart_trainer(code, logs, outcome):
            return
        done[role] = code
        write_status(self.run, STOPPED, reason=f"trainer exit code {code}")

    def _restart_trainer(self, code: int, logs: ContainerLogs, outcome: Outcome) -> bool:
        """Start a failed trainer container again (it resumes from its latest checkpoint);
        never after a NaN loss; False when it stays down."""
        name = self.names[TRAIN]
        if code == NAN_EXIT_CODE:
            self._report(TRAIN, "training stopped: the loss is not finite (NaN/Inf); "
                         "not restarted", outcome)
            return False
        what = f"container {name} exited with code {code}"
        if outcome.restarts >= self.spec.max_restarts:
            self._report(TRAIN, f"{what}; no restart left (--max_restarts="
                         f"{self.spec.max_restarts})", outcome)
            return False
        outcome.restarts += 1
        self._report(TRAIN, f"{what}; restarting it ({outcome.restarts}/"
                     f"{self.spec.max_restarts}), it resumes from its latest checkpoint", outcome)
        _docker("start", name)
        logs.ensure_following()
        return True

    def _report(self, role: str, message: str, outcome: Outcome) -> None:
        report(self.run, role, message, outcome, self.echo)
