"""Checks that this machine can run tfod: library versions, GPUs, Docker, compatibility fixes."""

from __future__ import annotations

import importlib
import json
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata

from tfod import stack


@dataclass
class Check:
    name: str
    value: str
    ok: bool = True


def _version(module_name: str) -> str:
    module = importlib.import_module(module_name)
    return getattr(module, "__version__", "installed")


def _distribution(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _shadowing_checks() -> list[Check]:
    """The OD API installs a top-level `datasets` package; so does Hugging Face: they clash."""
    if _distribution("datasets") == "not installed":
        return []
    return [
        Check(
            "datasets",
            "Hugging Face `datasets` is installed beside the OD API, whose own "
            "top-level `datasets` package shadows it: use a separate virtualenv",
            ok=False,
        )
    ]


def _pin_checks(chosen: stack.Stack) -> list[Check]:
    """Each pin of the stack's runtime.txt against what is installed (one line for all good)."""
    try:
        pins = stack.read_pins(stack.REPO / chosen.requirements)
    except stack.StackError as error:
        return [Check("pins", str(error), ok=False)]
    wrong = [f"{name} {_distribution(name)} (pinned {version})"
             for name, version in pins.items() if _distribution(name) != version]
    if wrong:
        return [Check("pins", "; ".join(wrong), ok=False)]
    return [Check("pins", f"all {len(pins)} of {chosen.requirements} installed")]


def _package_checks() -> list[Check]:
    try:
        chosen = stack.stack_for_python()
    except stack.StackError as error:
        return [Check("python", str(error), ok=False)]
    checks = [Check("python", platform.python_version()),
              Check("stack", f"{chosen.name}: Python {chosen}")]
    checks += _pin_checks(chosen)
    for label, module in [
        ("numpy", "numpy"),
        ("protobuf", "google.protobuf"),
        ("Pillow", "PIL"),
        ("pydicom", "pydicom"),
    ]:
        try:
            checks.append(Check(label, _version(module)))
        except ImportError as error:
            checks.append(Check(label, f"missing ({error})", ok=False))
    checks.append(Check("tf-models-official", _distribution("tf-models-official")))
    return checks


# What the trainer and the evaluator import beyond TensorFlow: a module that imports on the
# host but not in a clean image (cv2 without libGL) shows here, not when a container starts.
TRAINER_IMPORTS = (
    ("object_detection", "object_detection.core.preprocessor"),
    ("object_detection builders", "object_detection.builders.model_builder"),
    ("object_detection eval", "object_detection.eval_util"),
    ("opencv (cv2)", "cv2"),
    ("pycocotools", "pycocotools.cocoeval"),
    ("lvis", "lvis"),
)


def _import_check(label: str, module_name: str) -> Check:
    """Import ``module_name``; its version (or its distribution's) when it imports."""
    try:
        importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure here means the trainer cannot start
        return Check(label, f"import failed: {error!r}", ok=False)
    top = module_name.split(".")[0]
    version = getattr(importlib.import_module(top), "__version__", None)
    distribution = {"object_detection": "tf-object-detection-api"}.get(top, top)
    return Check(label, f"{version or _distribution(distribution)} (imports)")


def _stack_checks() -> list[Check]:
    """TensorFlow, the compatibility fixes and the OD API (which only import on a good stack)."""
    try:
        import tensorflow as tf
    except ImportError as error:
        return [Check("tensorflow", f"missing ({error})", ok=False)]
    checks = [Check("tensorflow", tf.__version__)]
    try:
        stack.check_tensorflow(tf)
    except stack.StackError as error:
        checks[0].ok = False
        checks.append(Check("keras", str(error), ok=False))
        return checks
    package, version = stack.keras_in_use(tf)
    checks.append(Check("tf.keras", f"{package} {version}"))
    from tfod import compat

    for fix, active in compat.fixes_in_effect().items():
        checks.append(Check(f"fix: {fix}", "in effect" if active else "NOT in effect", active))
    checks += [_import_check(label, module) for label, module in TRAINER_IMPORTS]
    gpus = tf.config.list_physical_devices("GPU")
    checks.append(
        Check("GPUs visible to TensorFlow", ", ".join(g.name for g in gpus) or "none (CPU only)")
    )
    return checks


def _docker_checks() -> list[Check]:
    """Docker is optional: its absence is reported, never a failure."""
    if not shutil.which("docker"):
        return [Check("docker", "client not installed (the docker backend is unavailable)")]
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{json .Runtimes}}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return [Check("docker", "engine did not answer within 10 s")]
    if result.returncode != 0:
        return [Check("docker", "client installed, engine not reachable")]
    runtimes = json.loads(result.stdout or "{}")
    nvidia = "nvidia" in runtimes or bool(shutil.which("nvidia-container-runtime"))
    return [
        Check("docker", "engine reachable"),
        Check("NVIDIA container runtime", "available" if nvidia else "not available"),
    ]


def run_checks() -> list[Check]:
    """Every check, in the order they are printed."""
    return _package_checks() + _stack_checks() + _shadowing_checks() + _docker_checks()


def format_report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{'ok ' if c.ok else 'BAD'} {c.name:<{width}}  {c.value}" for c in checks)
