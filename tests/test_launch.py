"""Launch commands (local and docker), GPU checks, --dry_run, and the local supervisor."""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tfod.runfolder import RunFolder, read_status, tail, write_status
from tfod.train.launch import common
from tfod.train.launch.base import LogFollower, ProgressFromHeartbeat
from tfod.train.launch.common import EVAL, TENSORBOARD, TRAIN, LaunchError, LaunchSpec
from tfod.train.launch.docker import container_name, docker_commands, docker_run_argv
from tfod.train.launch.local import LocalLauncher
from tfod.train.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
USER = "1000:1000"


def make_spec(tmp_path, settings: dict | None = None, **options) -> LaunchSpec:
    data = tmp_path / "data"
    return LaunchSpec(run_dir=tmp_path / "runs" / "ssd-fold0",
                      settings=TrainSettings(num_steps=100, **(settings or {})),
                      read_only_inputs=[data, tmp_path / "zoo"], **options)


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def split_at_image(argv: list[str], image: str) -> tuple[list[str], list[str]]:
    index = argv.index(image)
    return argv[:index], argv[index + 1:]


# ------------------------------------------------------------------------------ docker


def test_docker_gpu_trainer_command(tmp_path):
    spec = make_spec(tmp_path, gpus="0,1", max_restarts=3, image="tfod:gpu", shm_size="16g")
    argv = docker_run_argv(spec, TRAIN, user=USER)
    options, command = split_at_image(argv, "tfod:gpu")
    assert options[:3] == ["docker", "run", "--detach"]
    assert option_values(options, "--name") == [container_name(spec, TRAIN)]
    assert option_values(options, "--gpus") == ['"device=0,1"']
    assert "--restart" not in options  # the launcher restarts, never after a NaN stop
    assert option_values(options, "--shm-size") == ["16g"]
    assert option_values(options, "--user") == [USER]
    env = option_values(options, "--env")
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in env
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in env)  # docker renumbers
    run = spec.run.root
    assert option_values(options, "--volume") == [
        f"{tmp_path / 'data'}:{tmp_path / 'data'}:ro", f"{tmp_path / 'zoo'}:{tmp_path / 'zoo'}:ro",
        f"{run}:{run}:rw"]
    assert command == ["python", "-m", "tfod.train", "train", "--run_dir", str(run)]


def test_docker_single_gpu_and_all_gpus(tmp_path):
    assert option_values(docker_run_argv(make_spec(tmp_path, gpus="1"), TRAIN, USER),
                         "--gpus") == ["device=1"]
    assert option_values(docker_run_argv(make_spec(tmp_path, gpus="all"), TRAIN, USER),
                         "--gpus") == ["all"]


def test_docker_cpu_trainer_hides_gpus(tmp_path):
    argv = docker_run_argv(make_spec(tmp_path, gpus="", max_restarts=0), TRAIN, USER)
    assert "--gpus" not in argv and "--restart" not in argv
    assert "CUDA_VISIBLE_DEVICES=-1" in option_values(argv, "--env")


def test_docker_cpu_evaluator(tmp_path):
    spec = make_spec(tmp_path, gpus="0", eval_device="cpu")
    options, command = split_at_image(docker_run_argv(spec, EVAL, USER), spec.image)
    assert "--gpus" not in options and "--restart" not in options
    assert "CUDA_VISIBLE_DEVICES=-1" in option_values(options, "--env")
    assert f"{spec.run.root}:{spec.run.root}:rw" in option_values(options, "--volume")
    assert f"{tmp_path / 'data'}:{tmp_path / 'data'}:ro" in option_values(options, "--volume")
    assert command[:4] == ["python", "-m", "tfod.train", "eval"]


def test_docker_gpu_evaluator(tmp_path):
    spec = make_spec(tmp_path, gpus="0", eval_device="gpu:1")
    options, _ = split_at_image(docker_run_argv(spec, EVAL, USER), spec.image)
    assert option_values(options, "--gpus") == ["device=1"]
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES") for e in option_values(options, "--env"))


def test_docker_tensorboard_binds_localhost_unless_asked(tmp_path):
    spec = make_spec(tmp_path, tensorboard_port=6006)
    options, command = split_at_image(docker_run_argv(spec, TENSORBOARD, USER), spec.image)
    assert option_values(options, "--publish") == ["127.0.0.1:6006:6006"]
    assert option_values(options, "--volume") == [f"{spec.run.root}:{spec.run.root}:ro"]
    assert "--gpus" not in options and "--shm-size" not in options
    assert command[:3] == ["python", "-m", "tensorboard.main"] and "--bind_all" in command
    public = make_spec(tmp_path, tensorboard_port=6006, tensorboard_host="0.0.0.0")
    assert option_values(docker_run_argv(public, TENSORBOARD, USER), "--publish") == [
        "0.0.0.0:6006:6006"]


def test_docker_roles_follow_eval_device_and_tensorboard_port(tmp_path):
    assert list(docker_commands(make_spec(tmp_path), USER)) == [TRAIN, EVAL]
    assert list(docker_commands(make_spec(tmp_path, eval_device="none", tensorboard_port=1),
                                USER)) == [TRAIN, TENSORBOARD]


def test_docker_multi_worker_passes_tf_config_and_host_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    argv = docker_run_argv(make_spec(tmp_path, {"num_workers": 2}, gpus="all"), TRAIN, USER)
    assert option_values(argv, "--network") == ["host"]
    assert 'TF_CONFIG={"cluster": {}}' in option_values(argv, "--env")


def test_container_names_differ_per_run_folder(tmp_path):
    first = container_name(make_spec(tmp_path), TRAIN)
    other = container_name(LaunchSpec(run_dir=tmp_path / "elsewhere" / "ssd-fold0",
                                      settings=TrainSettings(num_steps=1)), TRAIN)
    assert first != other and first.startswith("tfod-ssd-fold0-") and first.endswith("-train")


# ------------------------------------------------------------------------- local + checks


def test_local_commands_and_environment(tmp_path):
    launcher = LocalLauncher(make_spec(tmp_path, gpus="0,1", eval_device="gpu:2",
                                       tensorboard_port=6006), python="py")
    commands, env = launcher.commands(), launcher.environment()
    assert commands[TRAIN][:4] == ["py", "-m", "tfod.train", "train"]
    assert env[TRAIN]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env[EVAL]["CUDA_VISIBLE_DEVICES"] == "2"
    assert commands[TENSORBOARD][-2:] == ["--host", "127.0.0.1"]
    cpu = LocalLauncher(make_spec(tmp_path), python="py").environment()
    assert cpu[TRAIN]["CUDA_VISIBLE_DEVICES"] == cpu[EVAL]["CUDA_VISIBLE_DEVICES"] == "-1"


@pytest.mark.parametrize("bad", ["gpu", "0;1", "-1", "0,", "cuda:0"])
def test_bad_gpus_are_refused(tmp_path, bad):
    with pytest.raises(LaunchError, match="--gpus"):
        make_spec(tmp_path, gpus=bad)


@pytest.mark.parametrize("bad", ["gpu", "gpu:", "tpu:0", ""])
def test_bad_eval_device_is_refused(tmp_path, bad):
    with pytest.raises(LaunchError, match="--eval_device"):
        make_spec(tmp_path, eval_device=bad)


def test_gpu_launch_needs_those_gpus(tmp_path):
    common.require_gpus(make_spec(tmp_path), visible=[])  # CPU: fine anywhere
    with pytest.raises(LaunchError, match="asks for GPU 0 .*none"):
        common.require_gpus(make_spec(tmp_path, gpus="0"), visible=[])
    with pytest.raises(LaunchError, match="GPU 0,1 .*: 0"):
        common.require_gpus(make_spec(tmp_path, gpus="0,1"), visible=["0"])
    with pytest.raises(LaunchError, match="the eval process asks for GPU 3"):
        common.require_gpus(make_spec(tmp_path, eval_device="gpu:3"), visible=["0"])
    with pytest.raises(LaunchError, match="asks for GPU all"):
        common.require_gpus(make_spec(tmp_path, gpus="all"), visible=[])
    common.require_gpus(make_spec(tmp_path, gpus="0,1", eval_device="gpu:1"), visible=["0", "1"])


def run_tool(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.train", *args], cwd=REPO, timeout=timeout,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_gpu_command_is_never_run_without_that_gpu(converted_sample, tmp_path, backend):
    # GPU 97 exists on no machine: the error comes before anything starts, docker included.
    run_dir = tmp_path / "run"
    done = run_tool("--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}",
                    f"--run_dir={run_dir}", "--gpus=97", f"--backend={backend}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the train process asks for GPU 97" in done.stderr
    assert "Nothing was started" in done.stderr
    assert not run_dir.exists()


def test_dry_run_prints_the_exact_docker_commands_and_starts_nothing(converted_sample, tmp_path):
    run_dir = tmp_path / "run"
    done = run_tool("--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}", "--fold=1",
                    f"--run_dir={run_dir}", "--backend=docker", "--gpus=0,1", "--image=tfod:gpu",
                    "--eval_device=cpu", "--tensorboard_port=6006", "--num_steps=500",
                    "--dry_run")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"run folder {run_dir.resolve()}" in out and "pipeline.config      new" in out
    assert f"read-only mounts: {converted_sample.resolve()}" in out
    lines = {role: line for line in out.splitlines() for role in (TRAIN, EVAL, TENSORBOARD)
             if line.startswith(f"  [{role}] ")}
    assert lines[TRAIN].startswith(f"  [{TRAIN}] docker run --detach --name tfod-run-")
    assert "--gpus '\"device=0,1\"'" in lines[TRAIN]
    assert lines[TRAIN].endswith(
        f"tfod:gpu python -m tfod.train train --run_dir {run_dir.resolve()}")
    assert "steps: 500, checkpoint every 1000" in out
    assert "--env CUDA_VISIBLE_DEVICES=-1" in lines[EVAL]
    assert "--publish 127.0.0.1:6006:6006" in lines[TENSORBOARD]
    assert not run_dir.exists()


def test_dry_run_local_shows_environment_and_resume_state(converted_sample, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "pipeline.config").write_text("model {}\n")  # a run started with another config
    done = run_tool("--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}",
                    f"--run_dir={run_dir}", "--dry_run")
    assert done.returncode == 2, done.stdout + done.stderr  # the launch would refuse it
    assert "training cannot resume" in done.stdout and "ERROR" not in done.stdout
    assert "error: " in done.stderr and "different pipeline.config" in done.stderr
    assert "Traceback" not in done.stderr
    assert "CUDA_VISIBLE_DEVICES=-1" in done.stdout and "-m tfod.train train" in done.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == ["pipeline.config"]


# ----------------------------------------------------------------- the local supervisor


FAKE_TRAINER = textwrap.dedent("""
    import json, os, sys, time
    run_dir, plan = sys.argv[1], sys.argv[2].split(",")
    counter = os.path.join(run_dir, "starts")
    starts = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(starts + 1))
    print("E0000 00:00:1796225894.671307   18905 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)", flush=True)
    print("ValueError: a fake error", flush=True)
    json.dump({"state": "running", "step": 50, "target": 100, "seconds_per_step": 0.2},
              open(os.path.join(run_dir, "train_status.json"), "w"))
    code = int(plan[min(starts, len(plan) - 1)])
    deadline = time.time() - code
    while code < 0 and time.time() < deadline:  # run until released or -code seconds pass
        if os.path.exists(os.path.join(run_dir, "release")):
            break
        time.sleep(0.1)
    code = max(code, 0)
    if code == 0:
        json.dump({"state": "finished", "step": 100, "time": time.time()},
                  open(os.path.join(run_dir, "train_status.json"), "w"))
    print(f"fake trainer exits with {code}", flush=True)
    sys.exit(code)
""")


def supervised(tmp_path, plan: str, max_restarts: int, **options):
    """Run the local supervisor on a small real trainer process that exits as ``plan`` says."""
    spec = make_spec(tmp_path, eval_device="none", max_restarts=max_restarts, **options)
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    lines = []
    launcher = LocalLauncher(spec, echo=lines.append, poll_seconds=0.05)
    launcher.processes[TRAIN][0].argv = [sys.executable, str(script), str(spec.run_dir), plan]
    config = tmp_path / "pipeline.config"
    config.write_text("model {}\n")
    return launcher.launch(config), lines, spec.run


def test_supervisor_restarts_a_crashed_trainer(tmp_path):
    outcome, lines, run = supervised(tmp_path, "1,1,0", max_restarts=2)
    assert outcome.exit_code == 0 and outcome.restarts == 2
    assert (run.root / "starts").read_text() == "3"
    assert run.train_log.read_text().count("=== tfod launcher: train start") == 3
    assert any("restarting it (1/2)" in line for line in lines)
    assert "[train] step 50/100, 0.200 s/step, ETA 0m10s" in lines
    assert "[train] ValueError: a fake error" in lines  # errors are echoed
    assert not [line for line in lines if line.startswith("[train] E0000")]  # native log lines
    assert "cuInit" in run.train_log.read_text()  # stay in the log (and its tail on a crash)


def test_supervisor_gives_up_after_max_restarts_and_reports_last_lines(tmp_path):
    outcome, lines, run = supervised(tmp_path, "7", max_restarts=1)
    assert outcome.exit_code == 1 and outcome.restarts == 1 and outcome.trainer_code == 7
    report = next(line for line in lines if "no restart left" in line)
    assert "the trainer exited with code 7" in report and "fake trainer exits with 7" in report
    assert read_status(run)["state"] == "stopped"  # tells the evaluator to finish


def test_supervisor_never_restarts_a_nan_loss(tmp_path):
    outcome, lines, run = supervised(tmp_path, "3,0", max_restarts=5)
    assert outcome.exit_code == 3 and outcome.restarts == 0
    assert (run.root / "starts").read_text() == "1"
    assert any("loss is not finite" in line for line in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_run_on_localhost_while_training(tmp_path):
    port, pages = free_port(), []

    def fetch():
        deadline = time.time() + 60
        while time.time() < deadline and not pages:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/logdir", timeout=2) as r:
                    pages.append(json.loads(r.read()))
            except OSError:
                time.sleep(0.5)

    def fetch_then_release():
        fetch()
        (tmp_path / "runs" / "ssd-fold0" / "release").touch()

    fetcher = threading.Thread(target=fetch_then_release)
    fetcher.start()
    outcome, lines, run = supervised(tmp_path, "-60", max_restarts=0, tensorboard_port=port)
    fetcher.join()
    assert outcome.exit_code == 0
    assert pages and pages[0]["logdir"] == str(run.root)
    assert any("TensorBoard" in line and f"127.0.0.1:{port}" in line for line in lines)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_launcher_stops_its_children(tmp_path, signum):
    threading.Timer(1.0, os.kill, (os.getpid(), signum)).start()
    started = time.time()
    outcome, lines, run = supervised(tmp_path, "-120", max_restarts=0)
    assert outcome.exit_code == 130 and time.time() - started < 60
    assert read_status(run)["state"] == "stopped"
    assert signal.getsignal(signum) is signal.SIG_DFL  # put back


# --------------------------------------------------------------- orphans and the run lock

HOLD_LOCK = ("import sys, time; from tfod.runfolder import RunFolder; "
             "from tfod.train.launch.common import RunLock; "
             "lock = RunLock(RunFolder(sys.argv[1])); lock.acquire(); print('locked', flush=True); "
             "time.sleep(600)")


def is_gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs no more)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_lock_held_by_a_live_launcher_refuses_and_a_dead_ones_is_taken_over(tmp_path):
    run = RunFolder(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run.root)], text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(common.RunLocked, match=rf"another launcher \(pid {holder.pid},"):
            common.RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (run.root / ".lock").read_text() == f"{holder.pid}\n"  # left behind by SIGKILL
    with common.RunLock(run) as lock:
        assert lock.took_over == holder.pid
        assert (run.root / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.slow
def test_kill_9_of_the_launcher_kills_its_children_and_a_second_launcher_is_refused(
        converted_sample, tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--model=ssd_mobilenet_v2", f"--data_dir={converted_sample}", "--image_size=128",
             "--batch_size=2", "--num_steps=5000", "--checkpoint_every=1000", "--max_restarts=0",
             f"--run_dir={run_dir}"]
    output = tmp_path / "launcher.out"
    with open(output, "w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "tools.train", *flags], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
    children = []
    try:
        started = wait_for(lambda: [pid for pid in re.findall(
            r"\[(?:train|eval)\] started \(pid (\d+)\)", output.read_text())][:2] or None
            if output.read_text().count(" started (pid ") >= 2 else None,
            180, "the trainer and the evaluator")
        children = [int(pid) for pid in started]
        assert (run_dir / ".lock").read_text() == f"{launcher.pid}\n"
        second = run_tool(*flags)
        errors = [line for line in second.stderr.splitlines() if "tfod-train" in line]
        assert second.returncode == 2 and len(errors) == 1, second.stdout + second.stderr
        assert f"being trained by another launcher (pid {launcher.pid}," in errors[0]
        assert not any(map(is_gone, children)), "the refused launcher touched the first's run"
        launcher.kill()
        launcher.wait()
        wait_for(lambda: all(map(is_gone, children)), 10, "the children to die with the launcher")
    finally:
        launcher.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------- run folder bits


def test_progress_comes_from_the_heartbeat_every_log_every_steps(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    progress = ProgressFromHeartbeat(run, every=100)
    assert progress.line() is None  # no heartbeat yet
    shown = []
    for step in (0, 50, 100, 150, 199, 260, 300):
        write_status(run, "running", step=step, target=300, seconds_per_step=0.5)
        shown.append(progress.line())
    assert shown == ["step 0/300, 0.500 s/step, ETA 2m30s", None,
                     "step 100/300, 0.500 s/step, ETA 1m40s", None, None,
                     "step 260/300, 0.500 s/step, ETA 0m20s",
                     "step 300/300, 0.500 s/step, ETA 0m00s"]
    write_status(run, "running", step=300, target=300, seconds_per_step=0.5)
    assert progress.line() is None  # shown once


def test_settings_are_written_once_and_a_relaunch_names_what_changed(tmp_path):
    spec = make_spec(tmp_path, eval_device="none", max_restarts=0)
    first = supervised(tmp_path, "0", max_restarts=0)[1]
    assert TrainSettings.read(spec.run) == spec.settings
    assert not any("settings changed" in line for line in first)
    (spec.run.root / "starts").unlink()
    lines = supervised(tmp_path, "0", max_restarts=0, settings={"checkpoint_every": 50})[1]
    assert any(line.startswith("settings changed since the last launch") and
               "checkpoint_every: 1000 -> 50" in line for line in lines), lines
    assert TrainSettings.read(spec.run).checkpoint_every == 50


def test_log_follower_and_tail(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("old\n")
    follower = LogFollower(log)
    with open(log, "a") as f:
        f.write("one\ntw")
    assert follower.new_lines() == ["one"]
    with open(log, "a") as f:
        f.write("o\n")
    assert follower.new_lines() == ["two"]
    assert tail(log, 2) == "one\ntwo" and tail(tmp_path / "missing.log") == ""


def test_status_and_plan(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.plan()[0] == f"run folder {run.root}"
    run.create()
    write_status(run, "running", step=5)
    assert read_status(run)["step"] == 5 and read_status(run)["pid"] == os.getpid()
    assert "(exists: resuming)" in run.plan()[0]


def test_config_change_and_adopt(tmp_path):
    run = RunFolder(tmp_path / "run")
    candidate = tmp_path / "candidate.config"
    candidate.write_text("train_config {\n  batch_size: 2\n}\n")
    assert common.config_change(run, candidate) is None
    common.adopt_config(run, candidate)
    assert run.pipeline_config.read_text() == candidate.read_text()
    common.adopt_config(run, candidate)  # the same config: resume
    candidate.write_text("train_config {\n  batch_size: 8\n}\n")
    with pytest.raises(LaunchError, match=r"(?s)-  batch_size: 2\n\+  batch_size: 8"):
        common.adopt_config(run, candidate)


def test_outermost_keeps_only_top_folders(tmp_path):
    paths = [tmp_path / "data", tmp_path / "data" / "sub", tmp_path / "zoo", tmp_path / "data"]
    assert common.outermost(paths) == [tmp_path / "data", tmp_path / "zoo"]


def test_launch_record_has_versions_commit_and_history(tmp_path):
    spec = make_spec(tmp_path)
    spec.run.create()
    common.write_launch_record(spec, "local", {"train": ["python"]}, {"fold": 0})
    record = common.write_launch_record(spec, "docker", {"train": ["docker"]}, {"fold": 0},
                                        image="tfod:gpu")
    saved = json.loads(spec.run.launch_json.read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["backend"] == "docker" and saved["image"] == "tfod:gpu"
    assert [h["backend"] for h in saved["history"]] == ["local"]
    assert saved["versions"]["tensorflow"] and saved["versions"]["python"]
    assert saved["git"]["commit"] is None or len(saved["git"]["commit"]) == 40
