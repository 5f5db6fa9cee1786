"""The docker backend on a real Docker engine: the images of both stacks, real training runs
in containers, restarts, NaN stops and clean-up after a failed launch.

The session fixture installs and starts the engine where missing (``docker/ensure_engine.sh``:
Debian's docker.io, as root) and builds the images (``docker/build_image.sh``: a debootstrap
base per Debian suite, nothing pulled; skipped when the image's context hash matches). In CI
(``CI=true``) an engine that cannot be had fails these tests; elsewhere they are skipped with
the reason.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfod import stack
from tfod.runfolder import RunFolder, list_checkpoints, read_status
from tfod.train.launch.common import TRAIN, LaunchSpec
from tfod.train.launch.docker import container_name
from tfod.train.settings import TrainSettings

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[1]
# The images built on a local debootstrap base (SUITE=<suite> make image): their tag, the stack
# their Debian's python3 must get (bookworm 3.11, trixie 3.13) and the package behind tf.keras.
IMAGES = {
    "bookworm": ("tfod:latest", "tf2.15", "keras"),
    "trixie": ("tfod:trixie", "tf2.21", "tf_keras"),
}
IMAGE = IMAGES["bookworm"][0]
FAKE_IMAGE = "tfod-test:fake-trainer"
NUM_STEPS, CHECKPOINT_EVERY = 40, 20
TRIXIE_STEPS = 10

# Replaces `python -m tfod.train` in a test image: counts its starts in the run folder and
# exits with the code in <run>/fake_exit (0: marks the run finished), so restarts are cheap.
FAKE_TRAINER = """
import json, pathlib, sys, time
run = pathlib.Path(sys.argv[sys.argv.index("--run_dir") + 1])
starts = run / "fake_starts"
starts.write_text(str(int(starts.read_text()) + 1 if starts.exists() else 1))
code = int((run / "fake_exit").read_text())
if code == 0:
    (run / "train_status.json").write_text(json.dumps({"state": "finished", "step": 1}))
print(f"fake trainer exits with {code}", flush=True)
sys.exit(code)
"""


def docker_unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs a Docker engine and the tfod image: {reason}")
    pytest.skip(reason)


def script(name: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "docker" / name)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, **env})


@pytest.fixture(scope="session")
def built():
    """``built(suite)``: the image of that Debian suite, built (or found up to date) on a running
    engine the first time it is asked for."""
    engine = script("ensure_engine.sh", 600)
    if engine.returncode != 0:
        docker_unavailable(f"no Docker engine: {engine.stderr.strip()[-500:]}")
    images = {}

    def build(suite: str) -> str:
        if suite not in images:
            started = time.time()
            done = script("build_image.sh", 1800, SUITE=suite)
            if done.returncode != 0:
                docker_unavailable(f"SUITE={suite} docker/build_image.sh failed: "
                                   f"{done.stderr.strip()[-2000:]}")
            print(f"image {IMAGES[suite][0]}: {time.time() - started:.0f} s\n"
                  f"{done.stderr.strip()}")
            images[suite] = IMAGES[suite][0]
        return images[suite]

    return build


@pytest.fixture(scope="session")
def image(built) -> str:
    """The bookworm (tf2.15) image, the one the training tests run."""
    return built("bookworm")


@pytest.fixture(scope="session")
def fake_image(image, tmp_path_factory) -> str:
    """The project's image with a stand-in trainer (one small layer on top)."""
    context = tmp_path_factory.mktemp("fake-image")
    (context / "__main__.py").write_text(FAKE_TRAINER)
    (context / "Dockerfile").write_text(
        f"FROM {image}\nCOPY __main__.py /opt/tfod/tfod/train/__main__.py\n")
    docker("build", "-q", "-t", FAKE_IMAGE, str(context), timeout=300)
    return FAKE_IMAGE


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done


def train_tool(*flags: str) -> list[str]:
    return [sys.executable, "-m", "tools.train", "--backend=docker", "--gpus=",
            "--model=ssd_mobilenet_v2", "--image_size=128", "--batch_size=2", *flags]


def tool_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def containers_of(run_dir: Path) -> list[str]:
    """Every container (running or not) labelled with this run folder."""
    listing = docker("ps", "--all", "--quiet", "--filter", f"label=tfod.run={run_dir.resolve()}")
    return listing.stdout.split()


def event_tags(folder: Path) -> set[str]:
    import tensorflow as tf

    return {value.tag for path in folder.glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}


def installed_in(image: str) -> dict[str, str]:
    """``{normalized distribution name: version}`` of the image's virtualenv."""
    listing = docker("run", "--rm", "--user", "1234:1234", image, "python", "-m", "pip", "list",
                     "--format=json", timeout=300)
    return {normalized(d["name"]): d["version"] for d in json.loads(listing.stdout)}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("suite", IMAGES)
def test_doctor_in_the_image_reports_its_stack_with_every_pin(built, suite):
    image = built(suite)
    _, stack_name, keras_package = IMAGES[suite]
    expected = next(s for s in stack.STACKS if s.name == stack_name)
    pins = stack.read_pins(REPO / expected.requirements)
    installed = installed_in(image)
    assert {name: installed.get(normalized(name)) for name in pins} == pins
    report = docker("run", "--rm", "--user", "1234:1234", image, "tfod-doctor",
                    timeout=300).stdout
    assert re.search(rf"^ok  stack +{re.escape(stack_name)}: ", report, re.M), report
    assert re.search(rf"^ok  pins +all {len(pins)} of {re.escape(expected.requirements)} ",
                     report, re.M), report
    for label, package in [("tensorflow", "tensorflow"), ("numpy", "numpy"),
                           ("protobuf", "protobuf"), ("pydicom", "pydicom"),
                           ("pycocotools", "pycocotools")]:
        assert re.search(rf"^ok  {label} +{re.escape(pins[package])}\b", report, re.M), report
    tf_minor = re.escape(".".join(expected.tensorflow.split(".")[:2]))
    assert re.search(rf"^ok  tf\.keras +{keras_package} {tf_minor}\.\d+$", report, re.M), report
    for imported in ("object_detection", "opencv \\(cv2\\)", "lvis"):
        assert re.search(rf"^ok  {imported} .*\(imports\)", report, re.M), report
    assert "BAD" not in report


@pytest.fixture(scope="module")
def trained(image, converted_sample, tmp_path_factory):
    """A real run in containers whose trainer is killed (docker kill) after a checkpoint."""
    run_dir = tmp_path_factory.mktemp("docker-train") / "run"
    command = train_tool(f"--data_dir={converted_sample}", f"--image={image}",
                         f"--run_dir={run_dir}", f"--num_steps={NUM_STEPS}",
                         f"--checkpoint_every={CHECKPOINT_EVERY}", "--log_every=10",
                         "--eval_device=cpu", "--max_restarts=1", "--trainer_timeout=180")
    started = time.time()
    launcher = subprocess.Popen(command, cwd=REPO, env=tool_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    trainer = container_name(LaunchSpec(run_dir=run_dir, settings=TrainSettings(num_steps=1)),
                             TRAIN)
    try:
        deadline = time.time() + 900
        while not (run_dir / "ckpt-2.index").exists():  # a checkpoint after step 0
            assert launcher.poll() is None, launcher.stdout.read()
            assert time.time() < deadline, "no checkpoint after step 0 in 900 s"
            time.sleep(0.2)
        killed = docker("kill", trainer, check=False)
        output, _ = launcher.communicate(timeout=900)
    finally:
        launcher.kill()
    yield {"run": RunFolder(run_dir), "code": launcher.returncode, "output": output,
           "killed": killed, "seconds": time.time() - started}
    docker("rm", "--force", *containers_of(run_dir), check=False)


@pytest.mark.slow
def test_docker_training_is_restarted_after_a_kill_and_resumes_to_the_final_step(trained):
    run, output = trained["run"], trained["output"]
    assert trained["killed"].returncode == 0, "the trainer ended before it could be killed"
    assert trained["code"] == 0, output
    assert "exited with code 137; restarting it (1/1)" in output
    log = run.train_log.read_text()
    assert re.search(r"resuming from ckpt-\d+ at step [1-9]\d*, training to step 40", log), log
    assert list_checkpoints(run.root)[-1].step == NUM_STEPS
    assert read_status(run)["state"] == "finished"
    assert "rsna/score" in event_tags(run.eval_events)
    assert "Loss/total_loss" in event_tags(run.train_events)
    print(f"docker run of {NUM_STEPS} steps with a kill and a restart: {trained['seconds']:.0f} s")


@pytest.mark.slow
def test_files_written_in_the_containers_belong_to_the_user_given(trained):
    run = trained["run"]
    command = json.loads(run.launch_json.read_text())["commands"][TRAIN]
    user = command[command.index("--user") + 1]
    assert user == f"{os.getuid()}:{os.getgid()}"  # the caller's
    written = [run.status, run.root / "checkpoint", *run.root.glob("ckpt-*"),
               *run.train_events.iterdir(), *run.eval_events.iterdir()]
    assert len(written) > 5
    owners = {f"{path.stat().st_uid}:{path.stat().st_gid}" for path in written}
    assert owners == {user}


@pytest.mark.slow
def test_data_is_mounted_read_only_and_the_run_folder_writable(trained):
    run = trained["run"]
    command = json.loads(run.launch_json.read_text())["commands"][TRAIN]
    volumes = [command[i + 1] for i, arg in enumerate(command) if arg == "--volume"]
    data = next(v.split(":")[0] for v in volumes if v.endswith(":ro"))
    user = command[command.index("--user") + 1]
    mounts = [arg for volume in volumes for arg in ("--volume", volume)]
    probe = ["docker", "run", "--rm", "--user", user, *mounts, IMAGE, "sh", "-c"]
    refused = subprocess.run([*probe, f"touch {data}/probe"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert not (Path(data) / "probe").exists()
    allowed = subprocess.run([*probe, f"touch {run.root}/probe"], capture_output=True,
                             text=True, timeout=120, check=False)
    assert allowed.returncode == 0, allowed.stderr
    assert (run.root / "probe").exists()


@pytest.mark.slow
def test_the_trixie_image_trains_on_its_stack(built, converted_sample, tmp_path):
    """A few real steps in the tf2.21 image (about a minute: the trainer's start dominates)."""
    run_dir = tmp_path / "run"
    started = time.time()
    try:
        done = subprocess.run(
            train_tool(f"--data_dir={converted_sample}", f"--image={built('trixie')}",
                       f"--run_dir={run_dir}", f"--num_steps={TRIXIE_STEPS}",
                       f"--checkpoint_every={TRIXIE_STEPS}", "--eval_device=none",
                       "--max_restarts=0"),
            cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=900)
    finally:
        docker("rm", "--force", *containers_of(run_dir), check=False)
    run = RunFolder(run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_status(run)["state"] == "finished"
    assert list_checkpoints(run.root)[-1].step == TRIXIE_STEPS
    assert "Loss/total_loss" in event_tags(run.train_events)
    print(f"trixie image, {TRIXIE_STEPS} steps in a container: {time.time() - started:.0f} s")


def run_fake(fake_image, converted_sample, run_dir: Path, exit_code: int, *flags: str):
    run_dir.mkdir(parents=True)
    (run_dir / "fake_exit").write_text(str(exit_code))
    command = train_tool(f"--data_dir={converted_sample}", f"--image={fake_image}",
                         f"--run_dir={run_dir}", "--num_steps=5", "--eval_device=none", *flags)
    try:
        return subprocess.run(command, cwd=REPO, env=tool_env(), capture_output=True, text=True,
                              timeout=600)
    finally:
        docker("rm", "--force", *containers_of(run_dir), check=False)


def test_a_nan_stop_is_not_restarted(fake_image, converted_sample, tmp_path):
    done = run_fake(fake_image, converted_sample, tmp_path / "run", 3, "--max_restarts=3")
    assert done.returncode == 3, done.stdout + done.stderr
    assert (tmp_path / "run" / "fake_starts").read_text() == "1"
    assert "loss is not finite (NaN/Inf); not restarted" in done.stdout


def test_a_crash_is_restarted_up_to_max_restarts(fake_image, converted_sample, tmp_path):
    done = run_fake(fake_image, converted_sample, tmp_path / "run", 5, "--max_restarts=2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (tmp_path / "run" / "fake_starts").read_text() == "3"
    assert "restarting it (2/2)" in done.stdout and "no restart left" in done.stdout


def test_a_failed_later_docker_run_leaves_no_container(fake_image, converted_sample, tmp_path):
    run_dir = tmp_path / "run"
    with socket.socket() as taken:  # TensorBoard's port is in use: its `docker run` fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run_dir.mkdir()
        (run_dir / "fake_exit").write_text("0")
        done = subprocess.run(
            train_tool(f"--data_dir={converted_sample}", f"--image={fake_image}",
                       f"--run_dir={run_dir}", "--num_steps=5", "--eval_device=none",
                       f"--tensorboard_port={port}"),
            cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=600)
    leftovers = containers_of(run_dir)
    docker("rm", "--force", *leftovers, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "tensorboard" in done.stderr and "failed" in done.stderr
    assert "[train] container" in done.stdout  # the trainer had started...
    assert leftovers == []  # ...and was removed with the failed one
