"""`ray up ray_cluster.yaml` for real, in a cluster box (tests/cluster_box/box.py): the repository's own
cluster file with only its placeholders filled in, Ray's launcher run from the client, the file's setup and
start commands unchanged, the pipeline on the cluster they make, and faults on it.

One box for the module; the tests run in order, each leaving the cluster up for the next:
1. every host joined with the hardware `workers.detect` offers there, `ray status` through the launcher,
   and setup.sh pointed each host's venv at its own copy of the repository (never at the machine's);
2. the dashboard answers through `ray dashboard`'s ssh tunnel, and only there;
3. the demo from the head: the timing on the hw_cpu host, the simulation on the hw_asic host; `ray down`
   in the middle of its search, a second `ray up`, and the same command resumes from the store;
4. the demo as a `ray job submit` with a working_dir: the ASIC host's network cut mid-profiling (the job
   fails, the launcher brings the host back, the resubmitted job measures only the missing LUT rows), and
   a Ray Train worker SIGKILLed in the fine-tune (it resumes from its checkpoint).
"""
from __future__ import annotations

import json
import os
import signal
import time

import pyarrow.parquet as pq
import pytest
import yaml

from hw_profiles.lut import existing_keys
from tests.pipelines.test_pipeline_demo import check_contract

from .cluster import wait_for
from .launcher import CLUSTER_FILE, placeholders_only

pytestmark = pytest.mark.slow

# Every stage for real, briefly (as tests/pipelines/test_pipeline_demo.py), on imagenet_resnet18's demo.
SMALL = ["--preset", "demo", "--seeds", "0", "--budgets", "0.9", "--search-epochs", "2",
         "--search-steps-per-epoch", "2", "--finetune-epochs", "2", "--finetune-steps-per-epoch", "2",
         "--pretrain-epochs", "1", "--demo-size", "64", "32", "--calibration-samples", "3", "--no-progress"]


def tail(path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} missing)"


@pytest.mark.timeout(1200)
def test_ray_up_brings_up_every_host_with_the_hardware_it_offers(cluster):
    box = cluster.box
    original, filled = yaml.safe_load(CLUSTER_FILE.read_text()), yaml.safe_load(cluster.launcher.file.read_text())
    assert placeholders_only(original, filled) == {"provider", "auth", "min_workers", "max_workers"}

    nodes = cluster.alive_by_host()
    expected = {spec.hostname: ({spec.offer_only: 1.0} if spec.offer_only else {})
                for spec in box.specs.values() if spec.cluster}
    assert {host: n["resources"] for host, n in nodes.items()} == expected
    assert {host: n["ip"] for host, n in nodes.items()} == {s.hostname: s.address for s in box.specs.values() if s.cluster}

    # `ray status` on the head through the launcher, as docs/cluster.md gives it (a bare `ray`: the setup
    # command put the venv's bin on the login shell's PATH, with RAY_AUTH_MODE=token)
    _, status = cluster.launcher.ray("exec", str(cluster.launcher.file), "ray status -v")
    assert f" {len(expected)} local.cluster.node" in status, status[-3000:]
    for resource in ("hw_asic", "hw_cpu"):
        assert f"0.0/1.0 {resource}" in status, status[-3000:]

    # setup.sh's `pip install -e` pointed each host's venv at that host's own copy of the repository...
    for host in cluster.cluster_hosts:
        where = box.ssh(host, "cd / && ~/haloc-ray/.venv/bin/python -c 'import haloc; print(haloc.__file__)'")
        assert where.stdout.strip() == f"{box.home}/haloc-ray/haloc/__init__.py", (host, where.stdout)
    # ... and left the machine's venv as it was
    assert cluster.venv_before and cluster.venv_fingerprint() == cluster.venv_before


@pytest.mark.timeout(600)
def test_dashboard_answers_through_the_tunnel_only(cluster):
    head = cluster.box.specs["head"]
    with cluster.dashboard_tunnel() as url:
        status, body = cluster.client_http(f"{url}/api/version")
        assert status == 200 and json.loads(body)["ray_version"] == "2.60.0"
        status, body = cluster.client_http(f"{url}/nodes?view=summary")
        assert status == 200
        hostnames = {n["hostname"] for n in json.loads(body)["data"]["summary"]}
        assert hostnames == {s.hostname for s in cluster.box.specs.values() if s.cluster}
        assert cluster.client_http(f"{url}/api/version", token=False)[0] == 401  # token authentication applies
    assert cluster.client_connect(head.address, 22)  # the head is reachable ...
    assert not cluster.client_connect(head.address, 8265)  # ... but its dashboard listens on 127.0.0.1 only


@pytest.mark.timeout(2700)
def test_demo_from_the_head_resumes_after_ray_down_and_a_second_ray_up(cluster):
    box, run = cluster.box, "box-head"
    store = cluster.store(run)
    args = cluster.pipeline_args(run, *SMALL, "--rank-step", "64", "--hardware", *cluster.hardware)
    started = time.monotonic()
    first_log = cluster.launcher.logs / "head-run-1.log"
    first = cluster.on_head(args, first_log)
    wait_for(lambda: first.poll() is not None or (cluster.stage(run, "search").get("state") == "running"
                                                  and _has_checkpoint(store / "search")),
             1200, "the head's run to checkpoint a search trial")
    assert first.poll() is None, "the run ended before its search could be interrupted:\n" + tail(first_log)
    cluster.times["head demo to mid-search"] = time.monotonic() - started

    down = time.monotonic()
    cluster.launcher.down()
    assert not cluster.ray_processes("head"), cluster.ray_processes("head")  # `ray down` stopped Ray on the head
    cluster.launcher.up()
    cluster.nodes(alive=len(cluster.cluster_hosts))
    cluster.times["ray down, ray up, all nodes again"] = time.monotonic() - down
    # the first run's driver lost its cluster: it ends by itself (never two drivers on one run)
    wait_for(lambda: not any(run in c for c in box.processes("head").values()), 300, "the first driver to end")
    assert first.wait(timeout=60) != 0

    rerun = time.monotonic()
    again_log = cluster.launcher.logs / "head-run-2.log"
    rc = cluster.on_head(args, again_log).wait(timeout=2000)
    cluster.times["head demo rerun"] = time.monotonic() - rerun
    text = tail(again_log, 20000)
    assert rc == 0, text[-4000:]
    assert "profile: done in an earlier attempt, skipped" in text  # no LUT row measured twice
    stages = cluster.manifest(run)["stages"]
    assert stages["profile"]["attempts"] == 1 and stages["search"]["attempts"] == 2, stages
    trials = json.loads((store / "search" / "trials.json").read_text())["trials"]
    assert trials and all(t["status"] == "done" and t["restored"] for t in trials), trials  # Tune resumed them

    report = json.loads((store / "report.json").read_text())
    check_contract(report, cluster.hardware)
    for hw in cluster.hardware:  # every LUT row measured on the host that offers that hardware, and only there
        assert set(pq.read_table(store / "luts" / f"{hw}.parquet").column("host").to_pylist()) == {f"box-{hw}"}


def _has_checkpoint(folder) -> bool:
    """A reported checkpoint (a checkpoint_* folder), not Ray Train's checkpoint_manager_snapshot.json."""
    return any(p.is_dir() for p in folder.rglob("checkpoint_*"))


def _registered_checkpoint(folder) -> bool:
    """A fine-tune checkpoint that Ray Train's controller has registered (a worker killed just after its
    report, before the controller took it in, restarts from the checkpoint before), and more epochs to go."""
    for snapshot in folder.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, ValueError):  # being rewritten
            continue
        if latest and not latest.get("metrics", {}).get("done"):
            return True
    return False


def _train_worker(cluster) -> tuple[str, int] | None:
    for host in cluster.cluster_hosts:
        for pid, cmd in cluster.box.processes(host).items():
            if cmd.startswith("ray::RayTrainWorker"):
                return host, pid
    return None


@pytest.mark.timeout(2700)
def test_job_resumes_after_a_network_cut_mid_profiling_and_a_killed_train_worker(cluster):
    box, run = cluster.box, "box-job"
    store = cluster.store(run)
    lut = store / "luts" / "asic.parquet"
    # the demo's own rank grid (every 32), finer than the head's run: simulations the ASIC host has not cached
    args = cluster.pipeline_args(run, *SMALL, "--hardware", "asic", "--finetune-epochs", "5",
                                 "--finetune-steps-per-epoch", "3")
    logs = cluster.launcher.logs
    started = time.monotonic()
    with cluster.dashboard_tunnel() as url:
        job = cluster.submit(url, "box-job-1", args, logs / "job-1.log")
        wait_for(lambda: job.poll() is not None or lut.exists(), 1200, "the job's first ASIC LUT rows")
        assert job.poll() is None, tail(logs / "job-1.log")
        box.cut("asic")
        try:
            wait_for(lambda: cluster.marked_dead("asic"), 180, "Ray to mark the cut ASIC host dead")
        finally:
            box.restore("asic")
        assert job.wait(timeout=900) != 0  # its only hw_asic node was lost: profiling stops, with the reason
        first_log = tail(logs / "job-1.log", 200000)
        assert "no profiler actor left" in first_log, tail(logs / "job-1.log")
        # the job ran the code it uploaded: its traceback names files of the unpacked working directory
        assert "runtime_resources/working_dir_files/" in first_log
        rows_before = pq.read_table(lut).num_rows
        cluster.times["job until the cut host was dead"] = time.monotonic() - started

        back = time.monotonic()
        cluster.nodes(alive=len(cluster.cluster_hosts), timeout_s=600)  # the launcher's autoscaler restarted it
        assert cluster.alive_by_host()["box-asic"]["resources"] == {"hw_asic": 1.0}
        cluster.times["cut host back"] = time.monotonic() - back

        second = time.monotonic()
        job = cluster.submit(url, "box-job-2", args, logs / "job-2.log")
        killed = []
        while job.poll() is None:
            if not killed and _registered_checkpoint(store / "finetune"):
                found = _train_worker(cluster)
                if found:
                    os.kill(found[1], signal.SIGKILL)  # a box process, by pid (box.processes)
                    killed.append(found)
            time.sleep(0.2)
        cluster.times["job rerun"] = time.monotonic() - second
    assert job.returncode == 0, tail(logs / "job-2.log")
    assert killed, "no Ray Train worker was found to kill during the fine-tune"

    profile = cluster.stage(run, "profile")
    total = profile["info"]["rows"]["asic"]
    assert profile["attempts"] == 2 and 0 < rows_before < total, (rows_before, profile)
    assert profile["info"]["measured"]["asic"] == total - rows_before  # nothing measured twice
    table = pq.read_table(lut)
    assert table.num_rows == total == len(existing_keys(table))  # none lost, none doubled
    (final,) = store.glob("finetune/*/final.json")
    record = json.loads(final.read_text())
    assert record["done"] and record["metrics"]["start_epoch"] >= 1, record["metrics"]  # resumed from a checkpoint
    check_contract(json.loads((store / "report.json").read_text()), ["asic"])
