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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tfod.runfolder import STOPPED, write_status
from tfod.train.launch.base import Launcher, log_path
from tfod.train.launch.common import (
    EVAL,
    TENSORBOARD,
    TRAIN,
    LaunchError,
    LaunchSpec,
    module_argv,
    parse_eval_device,
    role_env,
    roles,
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
    if role == TRAIN and spec.settings.num_workers > 1:
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


class DockerLauncher(Launcher):
    """Starts the run's containers; the base class watches them until the trainer and the
    evaluator end."""

    name = "docker"

    def __init__(self, spec: LaunchSpec, echo: Callable[[str], None] = print,
                 poll_seconds: float = 2.0, user: str | None = None):
        super().__init__(spec, echo, poll_seconds)
        self.names = {role: container_name(spec, role) for role in roles(spec)}
        self.argv = docker_commands(spec, user)
        self.logs: dict[str, ContainerLogs] = {}
        self.started: list[str] = []

    def commands(self) -> dict[str, list[str]]:
        return dict(self.argv)

    def plan_notes(self) -> list[str]:
        return ["read-only mounts: " + ", ".join(map(str, self.spec.read_only_inputs))]

    def launch_record_image(self) -> str | None:
        return self.spec.image

    def prepare(self) -> None:
        require_docker()
        for role, name in self.names.items():
            state = container_state(name)
            if state is None:
                continue
            if state[0] in ("running", "restarting") and role != TENSORBOARD:
                raise LaunchError(f"container {name} is already running this run folder; "
                                  f"watch it with `docker logs -f {name}` or stop it first")
            _docker("rm", "--force", name)

    def start(self, role: str) -> None:
        """``docker run`` the role; on a failure remove every container started, then raise."""
        name = self.names[role]
        self.started.append(name)  # a failed `run` can leave a created container
        try:
            container = _docker(*self.argv[role][1:]).stdout.strip()
        except BaseException:
            for follower in self.logs.values():
                follower.stop()
            _docker("rm", "--force", *self.started, check=False)
            write_status(self.run, STOPPED, reason="launch failed")
            raise
        self.echo(f"[{role}] container {name} ({container[:12]}), log {log_path(self.run, role)}")
        self.logs[role] = ContainerLogs(name, log_path(self.run, role))
        self.logs[role].ensure_following()

    def restart(self, role: str) -> None:
        _docker("start", self.names[role])
        self.logs[role].ensure_following()

    def exit_code(self, role: str) -> int | None:
        state = container_state(self.names[role])
        if state is None:
            return 1  # removed under us: reported by describe_exit
        status, code, _ = state
        if status in ("running", "restarting"):
            if status == "running" and role in self.logs:
                self.logs[role].ensure_following()
            return None
        return code if status in ("exited", "dead") else None  # created: not started yet

    def describe_exit(self, role: str, code: int) -> str:
        name = self.names[role]
        if container_state(name) is None:
            return f"container {name} disappeared"
        return f"container {name} exited with code {code}"

    def stop_all(self) -> None:
        for name in self.names.values():
            _docker("stop", name, check=False)

    def cleanup(self) -> None:
        if TENSORBOARD in self.names:
            _docker("rm", "--force", self.names[TENSORBOARD], check=False)
        for follower in self.logs.values():
            follower.stop()
