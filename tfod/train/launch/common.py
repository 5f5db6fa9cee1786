"""What both launchers share: the launch spec, the commands, GPU checks, the run's config and
its ``launch.json``.

The trainer, the evaluator and TensorBoard run as ``python -m tfod.train train|eval`` and
``python -m tensorboard.main``, the same commands locally and inside a container; the launchers
differ only in how they start, watch and restart them.
"""
from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfod.errors import NAN_LOSS as NAN_EXIT_CODE  # noqa: F401  (the launchers' name)
from tfod.errors import BadInput
from tfod.runfolder import LockHeld, PidLock, RunFolder, read_json, write_json
from tfod.train.settings import TrainSettings

TRAIN, EVAL, TENSORBOARD = "train", "eval", "tensorboard"
REPO = Path(__file__).resolve().parents[3]
VERSIONED_PACKAGES = (
    "tensorflow", "tf-models-official", "tf-object-detection-api", "tf-slim", "numpy",
    "protobuf", "pycocotools", "pydicom", "tensorboard",
)


class LaunchError(BadInput):
    """A launch that cannot start: bad flags, no GPU, no Docker, a changed config."""


@dataclass
class LaunchSpec:
    """Everything a launcher needs to start one run: where, the run's training settings (which
    its processes read from the run folder), and how the processes run (devices, TensorBoard,
    restarts, Docker image). Paths are absolute."""

    run_dir: Path
    settings: TrainSettings
    gpus: str = ""  # "", "all", "0", "0,1"
    eval_device: str = "cpu"  # "cpu", "gpu:N", "none"
    tensorboard_port: int = 0
    tensorboard_host: str = "127.0.0.1"
    max_restarts: int = 2
    image: str = "tfod:latest"
    shm_size: str = "8g"
    read_only_inputs: list[Path] = field(default_factory=list)  # data and checkpoints (docker)

    def __post_init__(self):
        self.run_dir = Path(self.run_dir).expanduser().resolve()
        self.gpus = normalize_gpus(self.gpus)
        parse_eval_device(self.eval_device)
        if self.max_restarts < 0:
            raise LaunchError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.settings.patience and not self.evaluates:
            raise LaunchError("--patience needs the evaluator: drop --eval_device=none")

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def num_steps(self) -> int:
        return self.settings.num_steps

    @property
    def evaluates(self) -> bool:
        return self.eval_device != "none"

    def as_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value)
                for key, value in asdict(self).items()} | {
            "read_only_inputs": [str(path) for path in self.read_only_inputs]}


# ------------------------------------------------------------------------------ devices


def normalize_gpus(text: str | None) -> str:
    """``--gpus``: '' (CPU), 'all', or comma-separated GPU indices ('0', '0,1')."""
    text = (text or "").replace(" ", "")
    if text in ("", "all"):
        return text
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise LaunchError(f"--gpus must be empty (CPU), 'all' or indices like '0' or '0,1', "
                          f"got {text!r}")
    return text


def parse_eval_device(text: str) -> tuple[str, str | None]:
    """``--eval_device``: ('cpu', None), ('gpu', 'N') or ('none', None)."""
    if text in ("cpu", "none"):
        return text, None
    match = re.fullmatch(r"gpu:(\d+)", text or "")
    if not match:
        raise LaunchError(f"--eval_device must be 'cpu', 'gpu:N' or 'none', got {text!r}")
    return "gpu", match.group(1)


def requested_gpus(spec: LaunchSpec) -> dict[str, str]:
    """Which role asks for which GPUs: {'train': '0,1', 'eval': '2'} (empty: CPU only)."""
    wanted = {TRAIN: spec.gpus} if spec.gpus else {}
    kind, index = parse_eval_device(spec.eval_device)
    if kind == "gpu":
        wanted[EVAL] = index
    return wanted


def visible_gpus() -> list[str]:
    """Indices of the NVIDIA GPUs on this machine (``nvidia-smi -L``); [] without a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return re.findall(r"^GPU (\d+):", listing.stdout, flags=re.MULTILINE)


def require_gpus(spec: LaunchSpec, visible: list[str] | None = None) -> None:
    """Refuse a GPU launch on a machine without those GPUs, before anything starts."""
    wanted = requested_gpus(spec)
    if not wanted:
        return
    visible = visible_gpus() if visible is None else visible
    for role, gpus in wanted.items():
        missing = [] if gpus == "all" else [g for g in gpus.split(",") if g not in visible]
        if not visible or missing:
            flag = "--gpus" if role == TRAIN else "--eval_device"
            seen = ", ".join(visible) if visible else "none (nvidia-smi found no GPU)"
            raise LaunchError(
                f"the {role} process asks for GPU {gpus} ({flag}) but this machine's GPUs are: "
                f"{seen}. Nothing was started. Use --gpus= and --eval_device=cpu to run on CPU."
            )


def cuda_visible_devices(role: str, spec: LaunchSpec) -> str | None:
    """CUDA_VISIBLE_DEVICES for a role: -1 hides every GPU; None leaves them all visible."""
    if role == TRAIN:
        return None if spec.gpus == "all" else (spec.gpus or "-1")
    kind, index = parse_eval_device(spec.eval_device)
    return index if kind == "gpu" else "-1"


# ----------------------------------------------------------------------------- commands


def module_argv(role: str, spec: LaunchSpec, python: str = "python",
                bind_all: bool = False) -> list[str]:
    """The command of a role, the same locally and in a container but for ``python`` and
    TensorBoard's address (a container binds every address and publishes one port). The
    trainer and the evaluator read everything else from the run folder."""
    run = spec.run
    if role == TENSORBOARD:
        address = ["--bind_all"] if bind_all else ["--host", spec.tensorboard_host]
        return [python, "-m", "tensorboard.main", "--logdir", str(run.root),
                "--port", str(spec.tensorboard_port), *address]
    return [python, "-m", "tfod.train", role, "--run_dir", str(run.root)]


def role_env(role: str, spec: LaunchSpec) -> dict[str, str]:
    """Environment variables a role needs on top of the inherited ones."""
    env = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "1"}
    if role in (TRAIN, EVAL):
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        devices = cuda_visible_devices(role, spec)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
    if role == TRAIN and "TF_CONFIG" in os.environ:
        env["TF_CONFIG"] = os.environ["TF_CONFIG"]
    return env


def roles(spec: LaunchSpec) -> list[str]:
    return [TRAIN] + [EVAL] * spec.evaluates + [TENSORBOARD] * (spec.tensorboard_port > 0)


# ----------------------------------------------------------------------------- run lock


class RunLocked(LaunchError):
    """Another live launcher trains this run folder."""


class RunLock(PidLock):
    """One launcher per run folder: a :class:`tfod.runfolder.PidLock` on ``<run>/.lock``; a
    live holder makes :meth:`acquire` raise :class:`RunLocked` with its pid, a lock left by a
    dead launcher is taken over."""

    def __init__(self, run: RunFolder):
        super().__init__(run.root / ".lock")

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockHeld as held:
            raise RunLocked(f"{self.path.parent} is being trained by another launcher (pid "
                            f"{held.holder}, lock {self.path}): stop it, or use another "
                            "--run_dir") from None


# ------------------------------------------------------------------------- run's config


def config_change(run: RunFolder, candidate: Path) -> str | None:
    """None when the run may use ``candidate`` (a new run, or the same config: it resumes);
    else an error message that shows what changed."""
    if not run.pipeline_config.exists():
        return None
    old, new = run.pipeline_config.read_text(), Path(candidate).read_text()
    if old == new:
        return None
    return (f"{run.root} was started with a different pipeline.config, so it cannot resume "
            f"with this one:\n{_config_diff(old, new)}\nUse a new --run_dir, or rerun with "
            f"--pipeline_config={run.pipeline_config} to go on as it was.")


def adopt_config(run: RunFolder, candidate: Path) -> Path:
    """Make ``candidate`` the run's ``pipeline.config``; refuse to change it under a run."""
    change = config_change(run, candidate)
    if change:
        raise LaunchError(change)
    if not run.pipeline_config.exists():
        run.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(candidate, run.pipeline_config)
    return run.pipeline_config


def _config_diff(old: str, new: str, lines: int = 20) -> str:
    import difflib

    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "running", "asked", lineterm="",
                                n=0)
    return "\n".join(list(diff)[:lines])


def config_steps(pipeline_config: Path) -> int:
    """``train_config.num_steps`` of a pipeline.config (0 when unset)."""
    return _read_configs(pipeline_config)["train_config"].num_steps


def config_inputs(pipeline_config: Path) -> list[Path]:
    """The folders a run only reads: its records, label maps and fine-tune checkpoint."""
    configs = _read_configs(pipeline_config)
    paths = []
    readers = [configs["train_input_config"], *configs["eval_input_configs"]]
    for reader in readers:
        paths += [Path(pattern).parent for pattern in reader.tf_record_input_reader.input_path]
        if reader.label_map_path:
            paths.append(Path(reader.label_map_path).parent)
    checkpoint = configs["train_config"].fine_tune_checkpoint
    if checkpoint:
        paths.append(Path(checkpoint).parent)
    return outermost(paths)


def outermost(paths: list[Path]) -> list[Path]:
    """Absolute, deduplicated paths without any that lies inside another."""
    unique = sorted({Path(p).resolve() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return sorted(kept)


def _read_configs(pipeline_config: Path) -> dict:
    from tfod.config.pipeline import read_configs  # TensorFlow: only when a config is read

    return read_configs(pipeline_config)


# --------------------------------------------------------------------------- launch.json


def library_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    import tfod

    versions["tfod"] = tfod.__version__
    return versions


def git_commit(repo: Path = REPO) -> dict[str, str | bool | None]:
    """The commit of the tfod checkout and whether it has uncommitted changes."""
    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_launch_record(spec: LaunchSpec, backend: str, commands: dict[str, list[str]],
                        flags: dict, image: str | None = None) -> dict:
    """Write ``launch.json``: this launch, with earlier launches of the run kept in ``history``."""
    run = spec.run
    previous = read_json(run.launch_json, default=None)
    history = []
    if previous:
        history = previous.pop("history", []) + [previous]
    record = {
        "backend": backend,
        "commands": commands,
        "image": image,
        "flags": flags,
        "spec": spec.as_dict(),
        "versions": library_versions(),
        "git": git_commit(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "history": history,
    }
    write_json(run.launch_json, record)
    return record
