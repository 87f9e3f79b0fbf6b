"""`ray up ray_cluster.yaml` for real, in a cluster box (tests/cluster_box/box.py): the repository's own
cluster file with only its placeholders filled in, Ray's launcher run from the client, the file's setup and
start commands unchanged, the pipeline on the cluster they make, and faults on it.

One box for the module; the tests run in order, each leaving the cluster up for the next:
1. every host joined with the hardware `workers.detect` offers there, `ray status` through the launcher,
   and setup.sh pointed each host's venv at its own copy of the repository (never at the machine's);
2. the dashboard answers through `ray dashboard`'s ssh tunnel, and only there;
3. one demo run, the same command every time, through every fault (one run's work: the suite's time):
   from the head, the ASIC host's network cut mid-profiling (the run stops with the reason; the launcher
   brings the host back; the rerun measures only the missing LUT rows); `ray down` in the middle of the
   search and a second `ray up`; the same command as a `ray job submit` with a working_dir resumes the
   search and finishes, while a Ray Train worker is SIGKILLed in the fine-tune (it resumes from its
   checkpoint); from the head once more, the same report. The timing ran on the hw_cpu host, the
   simulation on the hw_asic host.
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
         "--pretrain-epochs", "1", "--pretrain-rounds", "1", "--demo-size", "64", "32", "--calibration-samples", "3",
         "--no-progress",
         # the box's hosts share this machine's CPUs: their timing is as noisy as the machine is busy, and
         # this test is about the launcher and the faults, not the verdicts (tests/pipelines/test_verdicts.py)
         "--accept-noisy-lut", "--allow-miss",
         # the supernet search, as before the demo presets searched blockwise: step 3 takes `ray down` once
         # the search has a checkpoint, and the blockwise search can end too soon after its first one
         "--search-mode", "supernet"]


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
    addresses = {spec.hostname: spec.address for spec in box.specs.values() if spec.cluster}
    assert {host: n["ip"] for host, n in nodes.items()} == addresses

    # `ray status` on the head through the launcher, as docs/cluster.md gives it (a bare `ray`: the setup
    # command put the venv's bin on the login shell's PATH, with RAY_AUTH_MODE=token)
    # The autoscaler's summary trails the nodes' joining by its update period (CI's loaded machine showed
    # them pending a while after they had joined): read it until it shows them all, for up to two minutes.
    wanted = [f" {len(expected)} local.cluster.node"] + [f"0.0/1.0 {r}" for r in ("hw_asic", "hw_cpu")]
    deadline = time.monotonic() + 120
    while True:
        _, status = cluster.launcher.ray("exec", str(cluster.launcher.file), "ray status -v")
        if all(w in status for w in wanted) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert [w for w in wanted if w not in status] == [], status[-3000:]

    # setup.sh's `pip install -e` pointed each host's venv at that host's own copy of the repository...
    for host in cluster.cluster_hosts:
        where = box.ssh(host, "cd / && ~/haloc-ray/.venv/bin/python -c 'import haloc; print(haloc.__file__)'")
        assert where.stdout.strip() == f"{box.home}/haloc-ray/haloc/__init__.py", (host, where.stdout)
    # ... and left the machine's venv as it was
    assert cluster.venv_before and cluster.venv_fingerprint() == cluster.venv_before, \
        (cluster.venv_before, cluster.venv_fingerprint())


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


def _lut_rows(store, hardware) -> dict[str, int]:
    return {hw: pq.read_table(store / "luts" / f"{hw}.parquet").num_rows if (store / "luts" / f"{hw}.parquet").exists()
            else 0 for hw in hardware}


class Attempts:
    """The attempts of one run, each a fresh process of the same command, each with its own log."""

    def __init__(self, cluster, run_id: str, args: list[str]):
        self.cluster, self.run_id, self.args = cluster, run_id, args
        self.count = 0

    def _log(self, kind: str):
        self.count += 1
        return self.cluster.launcher.logs / f"{self.run_id}-{self.count}-{kind}.log"

    def on_head(self):
        log = self._log("head")
        return self.cluster.on_head(self.args, log), log

    def as_job(self, url: str):
        log = self._log("job")
        return self.cluster.submit(url, f"{self.run_id}-{self.count}", self.args, log), log


@pytest.mark.timeout(3600)
def test_one_demo_run_through_a_network_cut_ray_down_and_a_killed_train_worker(cluster):
    box, run = cluster.box, "box-demo"
    store = cluster.store(run)
    hardware = cluster.hardware
    attempts = Attempts(cluster, run, cluster.pipeline_args(
        run, *SMALL, "--rank-step", "64", "--hardware", *hardware, "--finetune-epochs", "4",
        "--finetune-steps-per-epoch", "3"))
    t = time.monotonic()

    # 1. from the head; the ASIC host's cable pulled once its first LUT rows are in the store
    proc, log = attempts.on_head()
    wait_for(lambda: proc.poll() is not None or (store / "luts" / "asic.parquet").exists(), 1200,
             "the first ASIC LUT rows")
    assert proc.poll() is None, tail(log)
    box.cut("asic")
    try:
        wait_for(lambda: cluster.marked_dead("asic"), 180, "Ray to mark the cut ASIC host dead")
    finally:
        box.restore("asic")
    assert proc.wait(timeout=900) != 0  # its only hw_asic node was lost: profiling stops, saying so
    assert "no profiler actor left" in tail(log, 200000), tail(log)
    rows_before = _lut_rows(store, hardware)
    cluster.times["demo to the cut host marked dead"] = time.monotonic() - t

    # 2. the launcher's autoscaler restarts Ray on the host (its start commands, `ray stop` first)
    t = time.monotonic()
    cluster.nodes(alive=len(cluster.cluster_hosts), timeout_s=600)
    assert cluster.alive_by_host()["box-asic"]["resources"] == {"hw_asic": 1.0}
    cluster.times["cut host back"] = time.monotonic() - t

    # 3. the same command from the head resumes the profile; `ray down` once the search has a checkpoint
    t = time.monotonic()
    proc, log = attempts.on_head()
    wait_for(lambda: proc.poll() is not None or (cluster.stage(run, "search").get("state") == "running"
                                                 and _has_checkpoint(store / "search")),
             1500, "the search's first trial checkpoint")
    assert proc.poll() is None, "the run ended before its search could be interrupted:\n" + tail(log)
    cluster.times["demo rerun to mid-search"] = time.monotonic() - t
    t = time.monotonic()
    cluster.launcher.down()
    assert not cluster.ray_processes("head"), cluster.ray_processes("head")  # `ray down` stopped Ray on the head
    cluster.bring_up()
    cluster.times["ray down, ray up, all nodes again"] = time.monotonic() - t
    # that driver lost its cluster and ends by itself (never two drivers on one run)
    wait_for(lambda: not any(run in c for c in box.processes("head").values()), 300, "the old driver to end")
    assert proc.wait(timeout=60) != 0

    # 4. the same command as a job with the working directory; a Ray Train worker killed mid-fine-tune
    t = time.monotonic()
    with cluster.dashboard_tunnel() as url:
        proc, log = attempts.as_job(url)
        killed = []
        while proc.poll() is None:
            if not killed and _registered_checkpoint(store / "finetune"):
                found = _train_worker(cluster)
                if found:
                    os.kill(found[1], signal.SIGKILL)  # a box process, by pid (box.processes)
                    killed.append(found)
            time.sleep(0.2)
    cluster.times["demo as a job, to the end"] = time.monotonic() - t
    text = tail(log, 200000)
    assert proc.returncode == 0, text[-4000:]
    where = [line for line in text.splitlines() if line.startswith("project code from")]
    assert where and "runtime_resources/working_dir_files/" in where[0], text[-4000:]  # it ran the uploaded code
    assert killed, "no Ray Train worker was found to kill during the fine-tune"

    # 5. from the head once more: nothing left to do but the report
    t = time.monotonic()
    proc, log = attempts.on_head()
    assert proc.wait(timeout=900) == 0, tail(log)
    assert "finetune: done in an earlier attempt, skipped" in tail(log, 200000)
    cluster.times["demo from the head, done"] = time.monotonic() - t

    stages = cluster.manifest(run)["stages"]
    assert stages["profile"]["attempts"] == 2 and stages["search"]["attempts"] == 2, stages
    for hw in hardware:  # the cut lost no row and none was measured twice
        total = stages["profile"]["info"]["rows"][hw]
        table = pq.read_table(store / "luts" / f"{hw}.parquet")
        assert table.num_rows == total == len(existing_keys(table)), hw
        assert stages["profile"]["info"]["measured"][hw] == total - rows_before[hw], (hw, rows_before)
        # measured on the host that offers the hardware, and only there
        assert set(table.column("host").to_pylist()) == {f"box-{hw}"}
    assert 0 < rows_before["asic"] < stages["profile"]["info"]["rows"]["asic"], rows_before
    trials = json.loads((store / "search" / "trials.json").read_text())["trials"]
    assert trials and all(t["status"] == "done" and t["restored"] for t in trials), trials  # Tune resumed them
    finals = [json.loads(p.read_text()) for p in store.glob("finetune/*/final.json")]
    assert len(finals) == len(hardware) and all(f["done"] for f in finals)
    assert max(f["metrics"]["start_epoch"] for f in finals) >= 1, [f["metrics"] for f in finals]  # from a checkpoint
    check_contract(json.loads((store / "report.json").read_text()), hardware)
