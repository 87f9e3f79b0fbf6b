"""Faults injected into real runs: a Ray node lost mid-profiling, a search trial's worker SIGKILLed, the S3
endpoint failing during writes, two runs sharing one store; and the determinism of the search.

Covered elsewhere (not repeated here, see docs/reliability.md): a profiler actor killed
(tests/orchestrator/test_profiling.py), the driver SIGKILLed in search and in fine-tune and resumed to
the same report (tests/pipelines/test_pipeline_demo.py), in search alone (tests/orchestrator/test_search.py),
an S3 server restarted during a plain write or staying down (tests/orchestrator/test_store.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

import haloc
from hw_profiles.lut import existing_keys
from hw_profiles.profile import get_profile
from orchestrator.run_layout import RunLayout
from orchestrator.stages.profiling import needed_items, profile_model
from orchestrator.stages.search import SearchSpec, run_search
from orchestrator.store import RetryPolicy, Store, StoreUnavailableError
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY
from tests.orchestrator.search_hooks import SleepAfterEpoch, TraceStarts

TINY = SearchSpec(model="resnet20", hardware=("cpu",), budgets=(0.8,), seeds=(0,), budget_metric="flops", epochs=2,
                  warmup_epochs=1, steps_per_epoch=2, batch_size=16, data={"kind": "demo", "demo_train": 128},
                  rank_step=16, max_failures=0)


def _expected_keys(profile) -> set:
    items = needed_items(haloc.models.layer_specs("resnet20"), profile, profile.batch_size, profile.rank_step)
    return {(profile.name, sig.key, r) for sig, r in items}


def _wait(cond, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- a Ray node lost mid-profiling -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.pipeline
def test_second_node_killed_mid_profiling_then_rerun_completes_with_no_row_lost_or_doubled(ray_cluster, tmp_path):
    """`cpu` is offered by both nodes: node_b dies while its actor measures; node_a takes its batches
    (or the run fails with a clear error and a rerun measures only what is missing)."""
    # long enough to kill a node mid-run; noise limits off: this is about a node dying, not a busy one
    slow = replace(get_profile("cpu"), rank_step=8, repeats=150, warmup=1, threads=1, max_spread=100.0,
                   max_slowdown=1000.0)
    out, errors = {}, []

    def run():
        try:
            out.update(profile_model(RunLayout(str(tmp_path), "n"), "resnet20", [slow], rows_per_batch=2,
                                     progress=False))
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    lut = tmp_path / "n" / "luts" / "cpu.parquet"
    try:
        _wait(lambda: lut.exists() or not thread.is_alive(), 120, "the first LUT batch")
        assert thread.is_alive(), f"profiling ended before the node could be killed: {errors}"
        ray_cluster.kill_node("node_b")
        thread.join(timeout=300)
        assert not thread.is_alive()
    finally:
        thread.join(timeout=300)
        if "node_b" not in ray_cluster.procs:  # killed: bring the fixture back as later tests expect it
            _wait(lambda: "node_b" not in ray_cluster.node_ids(), 90, "node_b to be marked dead", poll=0.5)
            ray_cluster.add_worker("node_b")
    if errors:  # allowed: a clear error, then a rerun completes
        assert "profil" in str(errors[0]).lower(), errors
    before = len(RunLayout(str(tmp_path), "n").read_lut("cpu"))
    again = profile_model(RunLayout(str(tmp_path), "n"), "resnet20", [slow], progress=False)["cpu"]
    table = RunLayout(str(tmp_path), "n").read_lut("cpu")
    expected = _expected_keys(slow)
    assert existing_keys(table) == expected and len(table) == len(expected)  # none lost, none doubled
    assert again.reused_rows == before and again.measured_rows == len(expected) - before  # nothing measured twice
    assert not [p for p in (tmp_path / "n" / "luts").iterdir() if p.name.startswith(".")]  # no temp file left


# ---- a search trial's worker SIGKILLed ---------------------------------------------------------------

def _trial_pids(address: str) -> list[int]:
    from ray.util.state import list_actors

    pids = []
    for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000):
        if "search_trainable" in a.class_name or "ImplicitFunc" in a.class_name:
            try:
                if b"ray::" in Path(f"/proc/{a.pid}/cmdline").read_bytes():  # a live worker on this machine
                    pids.append(a.pid)
            except (OSError, TypeError):
                continue
    return pids


@pytest.mark.slow
@pytest.mark.pipeline
def test_killed_trial_worker_resumes_from_its_checkpoint(ray_cluster, tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    spec = replace(TINY, epochs=3, max_failures=2)  # Tune's FailureConfig retries the trial
    store = tmp_path / "store"
    killed = []

    def killer():
        def ready():
            return (trace / "starts.jsonl").exists() and any((store / "w" / "search").rglob("checkpoint_000000"))
        try:
            _wait(ready, 150, "a trial checkpoint")
            pids = _trial_pids(ray_cluster.address)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
        except AssertionError:
            pass

    thread = threading.Thread(target=killer)
    thread.start()
    records = run_search(RunLayout(str(store), "w"), spec, callbacks=[TraceStarts(trace), SleepAfterEpoch(4)])
    thread.join(timeout=30)
    assert killed, "no trial worker was found to kill"
    assert [(r["status"], r["epochs"]) for r in records] == [("done", 3)]
    starts = [json.loads(line)["start_epoch"] for line in (trace / "starts.jsonl").read_text().splitlines()]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 1, starts  # restarted from a checkpoint


# ---- the S3 endpoint failing during writes -------------------------------------------------------------

class CuttingProxy:
    """A TCP proxy on loopback in front of the S3 server that can cut connections in the middle of a
    request body: an endpoint failing while an object is being uploaded, without losing the server's data."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.cut_after = None  # bytes of one request to pass before cutting; None: never cut
        self.cut_requests_starting = None  # bytes, e.g. b"PUT": cut every such request at its first byte
        self.cuts_left = 0
        self.cuts = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.endpoint = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        up = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(up, client, None), daemon=True).start()
        self._pipe(client, up, self)

    def _pipe(self, src, dst, cutter):
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if cutter is not None and cutter.cut_requests_starting \
                        and data.startswith(cutter.cut_requests_starting):
                    cutter.cuts += 1
                    raise ConnectionResetError("request cut by the test proxy")
                if cutter is not None and cutter.cut_after is not None and cutter.cuts_left > 0 \
                        and sent + len(data) > cutter.cut_after:
                    dst.sendall(data[:max(0, cutter.cut_after - sent)])
                    cutter.cuts_left -= 1
                    cutter.cuts += 1
                    raise ConnectionResetError("cut by the test proxy")
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self._server.close()


def _lut_table(n_rows: int):
    """A real LUT table (the LUT code's schema) of `n_rows` made-up rows."""
    import datetime as dt

    from hw_profiles.lut import LutRow, rows_to_table
    from hw_profiles.signature import LayerSignature

    rows = []
    for i in range(n_rows):
        sig = LayerSignature("conv", 16 + i, 16, (3, 3), (1, 1), (1, 1), (1, 1), (32, 32), 1, "int8", False)
        rows.append(LutRow("asic", sig, 0, 1.0 + i, 1.0, 1.0, 0.0, 1, dt.datetime.now(dt.timezone.utc), "h", "{}"))
    return rows_to_table(rows)


@pytest.mark.timeout(180)
def test_store_outage_during_a_run_exits_4_not_as_bad_input(s3_server, tmp_path):
    """The store answers when the run opens it, then fails every write: the CLI ends with the outage's
    own exit code and one line naming the store, not with "bad input" (2) and not with a traceback."""
    from tests.reliability.helpers import SMALL, run_cli

    if not s3_server.is_running():
        s3_server.start()
    bucket = s3_server.make_bucket(f"f-{uuid.uuid4().hex[:10]}")
    proxy = CuttingProxy((s3_server.host, s3_server.port))
    proxy.cut_requests_starting = b"PUT"  # reads pass (the open's bucket check), every upload fails
    try:
        uri = f"s3://{bucket}/runs?endpoint_override={proxy.endpoint}&scheme=http&region=us-east-1"
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        proc = run_cli([*SMALL, "--store", uri, "--run-id", "outage"], env=env, timeout=120)
    finally:
        proxy.close()
    assert proc.returncode == 4, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"s3://{bucket}/runs" in errors[0] and "rerun the same command" in errors[0]
    assert proxy.cuts >= 2  # the store retried before giving up
    assert ACCESS_KEY not in proc.stderr and SECRET_KEY not in proc.stderr


@pytest.mark.timeout(180)
def test_s3_cut_mid_upload_is_retried_and_a_failing_endpoint_leaves_the_old_object_whole(s3_server):
    from orchestrator.manifest import RunManifest

    if not s3_server.is_running():
        s3_server.start()
    bucket = s3_server.make_bucket(f"f-{uuid.uuid4().hex[:10]}")
    proxy = CuttingProxy((s3_server.host, s3_server.port))
    try:
        uri = f"s3://{bucket}/runs?endpoint_override={proxy.endpoint}&scheme=http&region=us-east-1"
        store = Store.open(uri, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                           retry=RetryPolicy(attempts=6, base_delay_s=0.1, max_delay_s=0.5, max_total_s=20))
        manifest = RunManifest.load_or_create(store, "s3f", {"model": "resnet20"})
        old = _lut_table(50)
        store.write_parquet("s3f/luts/asic.parquet", old)
        new = _lut_table(4000)  # a few hundred kB: the cut lands inside its body
        # 1. cut once in the middle of the upload: retried, the object is whole
        proxy.cut_after, proxy.cuts_left = 64 * 1024, 1
        store.write_parquet("s3f/luts/asic.parquet", new)
        manifest.mark("profile", "done", rows=len(new))
        assert proxy.cuts == 1
        assert store.read_parquet("s3f/luts/asic.parquet").equals(new)
        # 2. the manifest write cut too: retried
        proxy.cut_after, proxy.cuts_left = 200, 1
        manifest.mark("search", "running")
        assert proxy.cuts == 2
        assert store.read_json("s3f/manifest.json")["stages"]["search"]["state"] == "running"
        # 3. every try cut: a clear error, and readers still get the previous object, whole
        proxy.cut_after, proxy.cuts_left = 64 * 1024, 1000
        with pytest.raises(StoreUnavailableError, match=r"asic\.parquet.*failed after \d+ tries") as err:
            store.write_parquet("s3f/luts/asic.parquet", _lut_table(8000))
        assert ACCESS_KEY not in str(err.value) and SECRET_KEY not in str(err.value)
        proxy.cuts_left = 0
        assert store.read_parquet("s3f/luts/asic.parquet").equals(new)
        assert store.list("s3f") == ["s3f/luts/asic.parquet", "s3f/manifest.json"]
    finally:
        proxy.close()


@pytest.mark.timeout(180)
def test_s3_server_restarted_during_lut_and_manifest_writes_is_retried(s3_server):
    from orchestrator.manifest import RunManifest

    if not s3_server.is_running():
        s3_server.start()
    bucket = s3_server.make_bucket(f"f-{uuid.uuid4().hex[:10]}")
    store = Store.open(s3_server.uri(bucket, "runs"), access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                       retry=RetryPolicy(attempts=12, base_delay_s=0.2, max_delay_s=1.0, max_total_s=45))
    manifest = RunManifest.load_or_create(store, "s3r", {"model": "resnet20"})
    table = _lut_table(100)
    s3_server.stop()
    try:
        restarter = s3_server.restart_later(1.0)
        store.write_parquet("s3r/luts/asic.parquet", table)  # fails while down, then succeeds
        manifest.mark("profile", "done", rows=len(table))
        restarter.join()
    finally:
        s3_server.start()
    assert store.read_parquet("s3r/luts/asic.parquet").equals(table)
    # moto keeps objects in memory: the restart lost the first manifest write, the retried mark wrote it whole
    assert store.read_json("s3r/manifest.json")["stages"]["profile"]["state"] == "done"


# ---- two runs in one store; the same seed on the same LUT -------------------------------------------------

def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.pipeline
def test_two_runs_share_a_store_untouched_and_the_same_seed_gives_the_same_ranks(ray_cluster, tmp_path):
    """Run `a`: profile the simulated ASIC, then search. Run `b` in the same store: the same LUT (copied),
    the same spec and seed. `a`'s files are byte-identical afterwards, `b` writes only under `b/`, and
    both searches choose the same ranks at the same predicted latency."""
    store = tmp_path / "store"
    asic = replace(get_profile("asic"), rank_step=32)
    profile_model(RunLayout(str(store), "a"), "resnet20", [asic], progress=False)
    spec = replace(TINY, hardware=("asic",), budget_metric="latency", rank_mode="latency", rank_step=32,
                   budgets=(0.95,))  # the simulated array's smallest reachable cost is ~0.85
    (rec_a,) = run_search(RunLayout(str(store), "a"), spec)
    a_files = _digests(store / "a")

    (store / "b" / "luts").mkdir(parents=True)
    (store / "b" / "luts" / "asic.parquet").write_bytes((store / "a" / "luts" / "asic.parquet").read_bytes())
    (rec_b,) = run_search(RunLayout(str(store), "b"), spec)

    assert _digests(store / "a") == a_files  # run b touched none of a's files
    assert sorted(p.name for p in store.iterdir()) == ["a", "b"]  # nothing outside the two run folders
    assert rec_a["status"] == rec_b["status"] == "done"
    assert rec_a["ranks"] == rec_b["ranks"] and rec_a["all_ranks"] == rec_b["all_ranks"]
    assert rec_a["predicted_cost"] == rec_b["predicted_cost"]
    assert rec_a["selected_heldout_acc"] == rec_b["selected_heldout_acc"]  # CPU training: same seed, same numbers
