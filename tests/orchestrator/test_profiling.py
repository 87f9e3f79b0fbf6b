"""Profiling fan-out on the real two-node Ray of tests/fixtures/ray_cluster.py (resnet20, tiny grids)."""
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

import haloc
from haloc.errors import BadInputError
from hw_profiles.lut import existing_keys
from hw_profiles.profile import get_profile
from orchestrator.run_layout import RunLayout
from orchestrator.stages.profiling import calibrate, needed_items, profile_model

pytestmark = pytest.mark.slow

CPU = replace(get_profile("cpu"), rank_step=32, warmup=1, repeats=3, threads=1)
ASIC = replace(get_profile("asic"), rank_step=64)


def expected_keys(profile):
    items = needed_items(haloc.models.layer_specs("resnet20"), profile, 1, profile.rank_step)
    return {(profile.name, sig.key, r) for sig, r in items}


@pytest.fixture(scope="module")
def profiled(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    results = profile_model(RunLayout(str(root), "r1"), "resnet20", [CPU, ASIC], progress=False)
    return root, results


def test_every_needed_row_is_written_once(profiled):
    root, results = profiled
    layout = RunLayout(str(root), "r1")
    for profile in (CPU, ASIC):
        table = layout.read_lut(profile.name)
        assert existing_keys(table) == expected_keys(profile) and len(table) == len(expected_keys(profile))
        assert results[profile.name].measured_rows == len(table) and results[profile.name].reused_rows == 0
    assert (root / "r1" / "luts" / "asic.parquet").exists()
    asic = layout.read_lut("asic")
    assert all(e > 0 for e in asic.column("energy_pj").to_pylist())


def test_actors_land_on_the_nodes_offering_their_resource(profiled, ray_cluster):
    _, results = profiled
    ids = ray_cluster.node_ids()
    assert sorted(results["cpu"].actor_nodes) == sorted([ids["node_a"], ids["node_b"]])  # one per node
    assert set(results["asic"].actor_nodes) == {ids["node_b"]} and len(results["asic"].actor_nodes) == 2


def test_second_run_measures_nothing_new(profiled):
    root, _ = profiled
    before = (root / "r1" / "luts" / "cpu.parquet").stat().st_mtime_ns
    again = profile_model(RunLayout(str(root), "r1"), "resnet20", [CPU, ASIC], progress=False)
    assert all(r.measured_rows == 0 and r.reused_rows == r.total_rows and not r.actor_nodes for r in again.values())
    assert (root / "r1" / "luts" / "cpu.parquet").stat().st_mtime_ns == before


def test_lut_gives_candidate_latencies(profiled):
    root, _ = profiled
    lut = RunLayout(str(root), "r1").latency_table("asic")
    spec = haloc.models.layer_specs("resnet20")["layer3.0.conv2"]
    curve = lut.curve(spec, 1)
    assert sorted(curve) == [0, 1, 64]  # 64 channels, rank_step 64
    full, mid = lut.candidate_latencies(spec, [spec.max_rank, 32], batch=1)
    assert full == curve[0]  # max rank costs the original layer
    assert mid == pytest.approx(curve[1] + (32 - 1) / (64 - 1) * (curve[64] - curve[1]))
    assert lut.missing_layers(haloc.models.layer_specs("resnet20"), 1) == []


def test_calibration_is_stored_beside_the_lut(profiled):
    root, _ = profiled
    cals = calibrate(RunLayout(str(root), "r1"), "resnet20", [CPU], samples=4, accept_noisy=True)
    stored = RunLayout(str(root), "r1").read_calibration("cpu")
    assert stored == cals["cpu"] and stored.samples == 4 and 0 <= stored.within_10pct <= 1
    assert (root / "r1" / "luts" / "cpu.calibration.json").exists()


def test_missing_resource_fails_fast_and_submits_nothing(profiled):
    root, _ = profiled
    start = time.monotonic()
    with pytest.raises(BadInputError, match="'hw_jetson'.*hw_asic"):
        profile_model(RunLayout(str(root), "r2"), "resnet20", ["jetson"], progress=False)
    assert time.monotonic() - start < 30
    assert not (root / "r2").exists()


def _profiler_pids(address):
    """Pids of live profiler actor processes (the state API may still list actors of earlier tests)."""
    from pathlib import Path

    from ray.util.state import list_actors

    pids = []
    for a in list_actors(address=address, filters=[("class_name", "=", "LayerProfiler"), ("state", "=", "ALIVE")]):
        try:
            title = Path(f"/proc/{a.pid}/cmdline").read_bytes()
        except (OSError, TypeError):
            continue
        if b"LayerProfiler" in title:
            pids.append(a.pid)
    return pids


def test_killed_actor_work_completes_with_no_row_lost_or_doubled(ray_cluster, tmp_path):
    # long enough to kill an actor mid-run; noise limits off: this is about an actor dying, not a busy node
    slow = replace(CPU, name="cpu", rank_step=8, repeats=150, max_spread=100.0, max_slowdown=1000.0)
    result, errors = {}, []

    def run():
        try:
            result.update(profile_model(RunLayout(str(tmp_path), "f"), "resnet20", [slow], rows_per_batch=2,
                                        progress=False))
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    lut = tmp_path / "f" / "luts" / "cpu.parquet"
    deadline = time.monotonic() + 120
    while not lut.exists() and time.monotonic() < deadline:  # at least one batch done: actors are busy
        time.sleep(0.1)
    try:
        pids = _profiler_pids(ray_cluster.address)  # explicit: other Ray clusters may run on this machine
        assert pids and thread.is_alive(), "the run ended before an actor could be killed; make it longer"
        os.kill(pids[0], signal.SIGKILL)
    finally:
        thread.join(timeout=300)
    assert not errors, errors
    table = RunLayout(str(tmp_path), "f").read_lut("cpu")
    assert existing_keys(table) == expected_keys(slow) and len(table) == len(expected_keys(slow))
    assert result["cpu"].measured_rows == len(table)


def test_corrupt_lut_in_the_store_names_the_file(tmp_path):
    (tmp_path / "r9" / "luts").mkdir(parents=True)
    (tmp_path / "r9" / "luts" / "cpu.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(BadInputError, match="r9/luts/cpu.parquet.*delete it"):
        RunLayout(str(tmp_path), "r9").read_lut("cpu")


def test_rows_of_another_timing_protocol_are_measured_again_on_resume(ray_cluster, tmp_path):
    """A resumed run whose profile now times with other threads does not keep the old rows: they are
    another protocol's measurements. The rows it measures record the new protocol."""
    coarse = replace(CPU, rank_step=64, repeats=2)
    first = profile_model(RunLayout(str(tmp_path), "p"), "resnet20", [coarse], progress=False)["cpu"]
    other = replace(coarse, threads=2)
    assert other.protocol_key != coarse.protocol_key
    again = profile_model(RunLayout(str(tmp_path), "p"), "resnet20", [other], progress=False)["cpu"]
    assert again.reused_rows == 0 and again.stale_rows == first.total_rows == again.measured_rows
    table = RunLayout(str(tmp_path), "p").read_lut("cpu")
    assert set(table.column("protocol").to_pylist()) == {other.protocol_key} and len(table) == first.total_rows
    same = profile_model(RunLayout(str(tmp_path), "p"), "resnet20", [other], progress=False)["cpu"]
    assert same.measured_rows == 0 and same.stale_rows == 0 and same.reused_rows == first.total_rows
