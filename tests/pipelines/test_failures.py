"""Failures a user meets, as a user meets them (the CLI in a subprocess): each ends with one clear line
and a run that can go on. Signals, a corrected rerun, a full or read-only store, wrong weights,
addresses that do not answer, real data named truthfully, the embedded Ray's clean-up."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.demo_run import ASIC_ARGS, ASIC_MODULE

from .test_pipeline_demo import ROOT, SMALL, run_cli, stage_state

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def _cli(args: list[str], env: dict | None = None, timeout: float = 900, module: str = "pipelines.cifar_resnet20"):
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def _run_processes(temp_marker: str) -> list[int]:
    """Pids of live processes whose command line names `temp_marker` (an embedded Ray's folder)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


# ---- 1, 2: the demos run; a budget nothing reaches is said right after profiling, and its fix keeps the LUTs

@pytest.mark.parametrize("module", ["pipelines.cifar_resnet20", "pipelines.cifar_vgg16", "pipelines.imagenet_resnet18"])
def test_every_demo_preset_runs_out_of_the_box_with_its_own_budgets(ray_cluster, tmp_path, module, request):
    """The demo's own budgets on the simulated ASIC (deterministic), short epochs: exit 0, budget met.
    cifar_resnet20's demo budget is SMALL's 0.9, so its command is the session's shared run's."""
    quick = [a for a in SMALL if a not in ("--budgets", "0.9")]
    if module == ASIC_MODULE:
        from pipelines.presets import CIFAR_RESNET20

        assert CIFAR_RESNET20.demo["budgets"] == (0.9,) and list(ASIC_ARGS) == [*SMALL, "--hardware", "asic"]
        report = request.getfixturevalue("asic_run").report()
    else:
        proc = subprocess.run([sys.executable, "-m", module, *quick, "--hardware", "asic", "--store", str(tmp_path),
                               "--run-id", "d", "--address", ray_cluster.address], cwd=ROOT, capture_output=True,
                              text=True, timeout=900, env=dict(ray_cluster.env, PYTHONPATH=str(ROOT)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["hardware"] == ["asic"]
    assert report["results"] and all(c["met"] for r in report["results"] for c in r["budget_check"].values())


def test_a_budget_below_the_floor_is_said_after_profiling_and_the_corrected_rerun_keeps_the_luts(ray_cluster, tmp_path):
    store = tmp_path / "store"
    low = run_cli(ray_cluster, store, "floor", "--hardware", "asic", "--budgets", "0.3")
    assert low.returncode == 2, low.stderr[-3000:]
    assert "budget(s) [0.3] cannot be met" in low.stderr  # said at the end of profiling, with the floor
    line = _one_error_line(low.stderr)
    assert "0.3" in line and "smallest reachable" in line
    lut = store / "floor" / "luts" / "asic.parquet"
    before = lut.stat().st_mtime_ns
    fixed = run_cli(ray_cluster, store, "floor", "--hardware", "asic", "--budgets", "0.9")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "keeping weights, profile" in fixed.stderr and lut.stat().st_mtime_ns == before


# ---- 3, 4: signals, and the embedded Ray's processes ---------------------------------------------------

def _wait_for_stage(proc, store, run_id, stage, timeout=600):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else "ended"
        if stage_state(store, run_id, stage) == "running":
            return
        time.sleep(0.5)
    raise AssertionError(f"stage {stage} never ran")


@pytest.mark.parametrize("sig,stage,embedded", [(signal.SIGTERM, "search", True), (signal.SIGINT, "finetune", False)],
                         ids=["sigterm-search-embedded", "sigint-finetune-cluster"])
def test_a_signal_ends_the_run_with_its_code_and_one_line_and_the_rerun_resumes(ray_cluster, asic_run, tmp_path, sig,
                                                                                stage, embedded):
    # from a copy of the session's shared run: the longer search and fine-tune redo the run from its
    # search on, so the signal lands in a stage that a user's rerun reaches the same way
    store, state = asic_run.copy_to(tmp_path / "store"), tmp_path / "state"
    run_id = asic_run.run_id
    args = [sys.executable, "-m", asic_run.module, *asic_run.args, "--search-epochs", "3",
            "--finetune-epochs", "3", "--store", str(store), "--run-id", run_id]
    env = dict(ray_cluster.env, PYTHONPATH=str(ROOT), HALOC_STATE_DIR=str(state))
    if not embedded:
        args += ["--address", ray_cluster.address]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_stage(proc, store, run_id, stage)
    temp_dirs = [json.loads(r.read_text())["temp_dir"] for r in (state / "embedded-ray").glob("*.json")]
    assert len(temp_dirs) == (1 if embedded else 0)
    time.sleep(3)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, out[-3000:]
    assert f"interrupted in {stage} ({signal.Signals(sig).name}); rerun the same command" in out
    assert "Traceback" not in out and "SIGTERM received" not in out  # no Python trace, no Ray crash dump
    assert stage_state(store, run_id, stage) == "interrupted"
    if embedded:  # the embedded Ray stopped with the driver, its record with it
        assert not list((state / "embedded-ray").glob("*.json")) and not _run_processes(temp_dirs[0])
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{stage}: done in an earlier attempt" not in again.stderr and (store / run_id / "report.json").is_file()
    assert "weights: done in an earlier attempt, skipped" in again.stderr  # the copy's stages before the change


def test_a_killed_drivers_embedded_ray_is_gone_and_a_stale_record_is_cleaned_by_pid(tmp_path):
    """SIGKILL of the driver takes its embedded Ray down (the parent-death signal); a record left by
    a driver that is gone makes the next start end that cluster's processes, and only those."""
    from orchestrator.embedded_ray import clean_up_stale

    state = tmp_path / "state"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HALOC_STATE_DIR=str(state))
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.cifar_resnet20", *SMALL, "--hardware", "asic",
                               "--store", str(tmp_path / "store"), "--run-id", "k"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 300
    while time.monotonic() < end and not list((state / "embedded-ray").glob("*.json")):
        time.sleep(0.5)
    (record,) = list((state / "embedded-ray").glob("*.json"))
    temp_dir = json.loads(record.read_text())["temp_dir"]
    time.sleep(5)
    driver.kill()
    driver.wait()
    end = time.monotonic() + 60
    while time.monotonic() < end and _run_processes(temp_dir):
        time.sleep(0.5)
    assert not _run_processes(temp_dir), "the embedded Ray outlived its driver"

    # a stale record: a "cluster" (a process group naming its folder) whose driver is gone
    folder = tmp_path / "hr-stale"
    folder.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)", str(folder)]  # its command line names the folder
    stale = subprocess.Popen(sleeper, start_new_session=True)
    bystander = subprocess.Popen(sleeper)  # same folder, another group: not the cluster's
    try:
        (state / "embedded-ray").mkdir(parents=True, exist_ok=True)
        (state / "embedded-ray" / f"{stale.pid}.json").write_text(json.dumps(
            {"pgid": stale.pid, "temp_dir": str(folder), "driver_pid": driver.pid, "address": "", "dashboard": ""}))
        os.environ["HALOC_STATE_DIR"] = str(state)
        try:
            ended = clean_up_stale()
        finally:
            del os.environ["HALOC_STATE_DIR"]
        assert ended == [stale.pid] and stale.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None and not folder.exists()
        assert not list((state / "embedded-ray").glob("*.json"))
    finally:
        for p in (stale, bystander):
            if p.poll() is None:
                p.kill()
                p.wait()


# ---- 5: bad input up front, nothing written ------------------------------------------------------------

def test_weights_of_another_shape_name_the_first_layer_and_both_shapes(tmp_path):
    import torch

    import haloc

    weights = tmp_path / "w.pt"
    torch.save(haloc.models.create("resnet20", num_classes=100).state_dict(), weights)
    proc = _cli([*SMALL, "--store", str(tmp_path / "store"), "--weights", str(weights)], timeout=120)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "'fc.weight'" in line and "(100, 64)" in line and "(10, 64)" in line and "--num-classes" in line
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_an_address_that_accepts_but_never_answers_fails_in_seconds(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    port = server.getsockname()[1]
    try:
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            start = time.monotonic()
            proc = _cli([*SMALL, "--store", str(tmp_path / "store"), "--address", address], timeout=120)
            assert proc.returncode == 2 and time.monotonic() - start < 45, proc.stderr[-2000:]
            line = _one_error_line(proc.stderr)
            assert address in line and "does not answer as a Ray cluster" in line
    finally:
        server.close()
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_a_non_routable_address_fails_in_seconds(tmp_path):
    """Inside a network namespace of the test's own, 10.77.0.2 lies behind a veth pair whose far end has no
    address: nothing answers, as for a host that is off. No packet leaves the namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to make a private network namespace")
    script = ("ip link set lo up && ip link add d0 type veth peer name d1 && ip addr add 10.77.0.1/24 dev d0 && "
              "ip link set d1 up && "
              "ip link set d0 up && exec \"$@\"")
    start = time.monotonic()
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", sys.executable, "-m",
                           "pipelines.cifar_resnet20",
                           *SMALL, "--store", str(tmp_path / "store"), "--address", "10.77.0.2:6379"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and time.monotonic() - start < 45, proc.stderr[-2000:]
    line = _one_error_line(proc.stderr)
    assert "10.77.0.2:6379" in line and "within" in line
    assert not (tmp_path / "store").exists()


# ---- a store on a full or a read-only filesystem ----------------------------------------------------

@pytest.fixture
def small_filesystem(tmp_path):
    """A 3 MiB tmpfs mounted for the test (root only), unmounted afterwards."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_a_full_disk_ends_with_one_line_naming_the_file_and_nothing_half_written(ray_cluster, small_filesystem):
    store = small_filesystem / "store"
    proc = _cli([*SMALL, "--hardware", "asic", "--store", str(store), "--run-id", "full",
                 "--address", ray_cluster.address], env=dict(ray_cluster.env))
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert str(store) in line and "No space left on device" in line and "--store" in line
    assert not [p for p in store.rglob(".*") if ".tmp-" in p.name]  # no temp file left behind


def test_a_read_only_store_is_refused_before_anything_runs(small_filesystem):
    (small_filesystem / "store").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    proc = _cli([*SMALL, "--store", str(small_filesystem / "store")], timeout=120)
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert str(small_filesystem / "store") in line and "not writable" in line


# ---- 6: real data named truthfully; the head and input follow the data; pretraining resumes -------------

def test_real_data_is_named_truthfully_and_the_model_follows_it(ray_cluster, tmp_path):
    from tests.fixtures.fake_data import write_fake_imagefolder

    data = write_fake_imagefolder(tmp_path / "birds", classes=3, per_class=4, size=48)
    store = tmp_path / "store"
    quick = [a for a in SMALL if a not in ("--demo-size", "64", "32")]
    proc = subprocess.run([sys.executable, "-m", "pipelines.imagenet_resnet18", *quick, "--preset", "quick",
                           "--data", str(data), "--hardware", "asic", "--store", str(store), "--rank-step", "64",
                           "--address", ray_cluster.address], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(ray_cluster.env, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = store / "imagenet_resnet18-quick-birds"  # the default run id says the data set
    report = json.loads((run / "report.json").read_text())
    assert report["dataset"] == f"ImageFolder at {data} (3 classes)" and report["demo"] is False
    assert report["preset"] == "quick"
    ranks = json.loads((store / report["results"][0]["artifacts"]["ranks"]).read_text())
    assert ranks["num_classes"] == 3 and ranks["input_size"] == [3, 48, 48]


def test_pretraining_checkpoints_every_epoch_and_resumes_after_an_interrupt(ray_cluster, tmp_path):
    store = tmp_path / "store"
    # two rounds at most (the rounds path, resumed across them, at one Ray Train job less than the default 3)
    args = [sys.executable, "-m", "pipelines.cifar_resnet20", *SMALL, "--pretrain-epochs", "4",
            "--pretrain-rounds", "2", "--pretrain-steps-per-epoch", "3", "--hardware", "asic", "--store", str(store),
            "--run-id", "pre",
            "--address", ray_cluster.address]
    env = dict(ray_cluster.env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = store / "pre" / "weights" / "pretrain" / "original"
    end = time.monotonic() + 600
    # Ray Train counts a checkpoint once its controller registered it (its snapshot names it): a folder
    # uploaded but not yet registered is not resumed from, so the signal waits for the snapshot.
    snapshot = job / "checkpoint_manager_snapshot.json"
    while time.monotonic() < end and not (snapshot.is_file() and "checkpoint_dir_name" in snapshot.read_text()):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "interrupted in weights" in out, out[-3000:]
    assert stage_state(store, "pre", "weights") == "interrupted"
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    info = json.loads((store / "pre" / "manifest.json").read_text())["stages"]["weights"]["info"]
    training = info["original_training"]  # rounds of 4 epochs until its validation top-1 settles
    assert training["epochs"] % 4 == 0 and training["epochs"] == len(training["history"]) >= 4
    assert info["source"] == f"trained here for {training['epochs']} epochs"
    assert info["resumed_at_epoch"] >= 1  # from the checkpoint the interrupted attempt left, not from scratch
