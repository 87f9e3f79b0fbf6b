"""The search stage on the real two-node Ray of tests/fixtures/ray_cluster.py: grid, selection,
resume after an errored trial (local store and S3 on moto), SIGKILL of the driver, bad input.

Tiny searches: resnet20, 128 generated 32x32 images, 2 epochs of 2 steps, rank step 16, FLOPs tables.
Every trial appends a line to `starts.jsonl` (test hook) so the tests can count how often each
trial (re)started and from which epoch.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import haloc
from haloc.errors import BadInputError
from orchestrator.run_layout import RunLayout
from orchestrator.stages.search import SearchSpec, load_trials, run_search
from orchestrator.stages.select import run_select
from orchestrator.store import Store
from tests.orchestrator.search_hooks import FailOnce, TraceStarts, starts

REPO = Path(__file__).resolve().parents[2]
TINY = SearchSpec(model="resnet20", hardware=("cpu",), budgets=(0.8,), seeds=(0,), budget_metric="flops", epochs=2,
                  warmup_epochs=1, steps_per_epoch=2, batch_size=16, data={"kind": "demo", "demo_train": 128},
                  rank_step=16, max_failures=0)


def test_spec_round_trips_through_a_dict_and_refuses_unknown_keys():
    spec = replace(TINY, budgets=(0.5, 0.7), seeds=(1, 2), lam_range=(1.0, 3.0))
    data = json.loads(json.dumps(spec.to_dict()))
    assert SearchSpec.from_dict(data) == spec
    with pytest.raises(BadInputError, match=r"unknown key\(s\) \['budget'\]"):
        SearchSpec.from_dict({"budget": 0.5})
    with pytest.raises(BadInputError, match="budgets"):
        SearchSpec(budgets=(0.5, -1.0))
    assert SearchSpec(hardware=("cpu", "asic")).target_groups() == [("cpu",), ("asic",)]
    assert SearchSpec(hardware=("cpu", "asic"), joint=True).target_groups() == [("cpu", "asic")]


@pytest.mark.parametrize("change, pattern", [
    (dict(hardware=("tpu9",)), r"unknown hardware profile 'tpu9'; choose one of \["),
    (dict(budgets=(0.8, 0.3)), r"budget 0.3 of flops .* below the smallest reachable cost .*\(fraction 0.5\d\d\)"),
    (dict(budget_metric="latency"), r"LUT of hardware 'cpu' .*lacks 19 layer.*profile the model on 'cpu' first"),
    (dict(model="resnet99"), r"unknown model 'resnet99'"),
])
def test_bad_input_fails_before_any_trial_and_writes_nothing(tmp_path, change, pattern):
    start = time.monotonic()
    with pytest.raises(BadInputError, match=pattern):
        run_search(RunLayout(str(tmp_path), "bad"), replace(TINY, **change))
    assert time.monotonic() - start < 30
    assert not (tmp_path / "bad" / "search").exists()


def test_grid_of_two_budgets_and_two_seeds_then_selection(ray_cluster, tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    spec = replace(TINY, budgets=(0.6, 0.8), seeds=(0, 1))
    records = run_search(RunLayout(str(tmp_path / "store"), "grid"), spec, callbacks=[TraceStarts(trace)])
    assert len(records) == 4 and all(r["status"] == "done" for r in records)
    assert sorted((r["budget"], r["seed"]) for r in records) == [(0.6, 0), (0.6, 1), (0.8, 0), (0.8, 1)]
    for r in records:
        assert r["predicted_cost"]["flops"] <= r["budget_abs"]["flops"] * (1 + 1e-9), r
        assert r["within_budget"] == {"flops": True} and r["epochs"] == 2
        assert 0.0 <= r["selected_heldout_acc"] <= 1.0
    assert len(starts(trace)) == 4  # each trial ran once

    configs = run_select(RunLayout(str(tmp_path / "store"), "grid"), "resnet20")
    selected = json.loads((tmp_path / "store" / "grid" / "selected.json").read_text())
    assert selected["configs"] == json.loads(json.dumps(configs))
    assert [c["budget"] for c in configs] == [0.6, 0.8]
    by_id = {r["trial_id"]: r for r in records}
    for c in configs:
        best = by_id[c["trial_id"]]
        cell = [r for r in records if r["budget"] == c["budget"]]
        assert c["seeds"] == [0, 1] and c["model"] == "resnet20" and c["targets"] == ["flops"]
        assert best["selected_heldout_acc"] == max(r["selected_heldout_acc"] for r in cell)
        assert c["ranks"] == best["ranks"] and c["predicted_cost"] == best["predicted_cost"]
        assert 0.0 <= c["rank_agreement"] <= 1.0
        # the best trial's searched weights are kept in the store: the fine-tune starts from them
        assert c["searched_state"] == f"search/searched/{c['trial_id']}.pt" == best["searched_state"]
        state = RunLayout(str(tmp_path / "store"), "grid").store.read_bytes(f"grid/{c['searched_state']}")
        student = haloc.rebuild("resnet20", c["ranks"], torch.load(io.BytesIO(state), weights_only=True))
        assert sum(p.numel() for p in student.parameters()) < haloc.params(haloc.models.create("resnet20"))
    assert configs[0]["predicted_cost"]["flops"] < configs[1]["budget_abs"]["flops"]


def _fail_then_resume(store, tmp_path, spec):
    """Run with one trial raising in epoch 2, then rerun; returns (first records, second records, trace)."""
    trace = tmp_path / "trace"
    trace.mkdir()
    callbacks = [TraceStarts(trace), FailOnce({"seed": spec.seeds[-1]}, epoch=2, marker=tmp_path / "failed")]
    first = run_search(RunLayout(store, "resume"), spec, callbacks=callbacks)
    second = run_search(RunLayout(store, "resume"), spec, callbacks=callbacks)
    return first, second, starts(trace)


def test_errored_trial_resumes_from_its_checkpoint_and_finished_trials_are_not_rerun(ray_cluster, tmp_path):
    spec = replace(TINY, seeds=(0, 1))
    first, second, trace = _fail_then_resume(str(tmp_path / "store"), tmp_path, spec)
    status = {r["seed"]: (r["status"], r["epochs"]) for r in first}
    assert status == {0: ("done", 2), 1: ("error", 1)}
    assert all(r["status"] == "done" and r["restored"] for r in second)
    assert {r["trial_id"] for r in first} == {r["trial_id"] for r in second}
    runs = {}
    for line in trace:
        runs.setdefault(line["seed"], []).append(line["start_epoch"])
    assert runs == {0: [0], 1: [0, 1]}  # seed 0 never rerun; seed 1 resumed after its epoch-1 checkpoint
    assert load_trials(RunLayout(str(tmp_path / "store"), "resume")) == json.loads(json.dumps(second))


def test_resume_from_s3(ray_cluster, s3_server, s3_store_uri, tmp_path):
    # Keys given explicitly: the Ray workers of the session cluster do not see this test's environment.
    store = Store.open(s3_store_uri, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    first, second, trace = _fail_then_resume(store, tmp_path, TINY)
    assert [r["status"] for r in first] == ["error"] and [r["status"] for r in second] == ["done"]
    assert [line["start_epoch"] for line in trace] == [0, 1]
    files = store.list("resume/search/grid")
    assert any("checkpoint_000001" in f for f in files) and any("experiment_state" in f for f in files)
    assert not Path(s3_store_uri).exists()  # nothing went to a local folder named like the URI


def test_optuna_samples_lam_per_budget_under_asha(ray_cluster, tmp_path):
    spec = replace(TINY, optuna_samples=2, seeds=(0, 1), asha=True)
    records = run_search(RunLayout(str(tmp_path / "store"), "opt"), spec)
    assert len(records) == 2 and all(r["status"] == "done" for r in records)
    assert {r["experiment"] for r in records} == {"optuna-flops-b0.8"}
    lams = [r["lam"] for r in records]
    assert all(0.5 <= v <= 20.0 for v in lams) and lams[0] != lams[1]
    assert (tmp_path / "store" / "opt" / "search" / "optuna-flops-b0.8").is_dir()


def test_train_once_search_many_reuses_the_shared_weights(ray_cluster, tmp_path):
    store = tmp_path / "store"
    spec = replace(TINY, budgets=(0.6, 0.8), train_once=True, shared_epochs=1)
    records = run_search(RunLayout(str(store), "once"), spec)
    assert all(r["status"] == "done" and r["within_budget"] == {"flops": True} for r in records)
    shared = store / "once" / "search" / "shared_supernet.pt"
    info = json.loads((store / "once" / "search" / "shared_supernet.json").read_text())
    assert shared.is_file() and info["epochs"] == 1
    mtime = shared.stat().st_mtime_ns
    run_search(RunLayout(str(store), "once"), spec)  # finished: nothing retrained
    assert shared.stat().st_mtime_ns == mtime


def write_staircase_lut(store, run_id, hardware, specs, step):
    """Made-up LUT rows (real Parquet via the LUT code): latency grows every `step` ranks."""
    import datetime as dt

    from hw_profiles.lut import LutRow, rows_to_table
    from hw_profiles.profile import get_profile
    from hw_profiles.signature import LayerSignature, profiling_ranks
    from orchestrator.run_layout import RunLayout

    prof = get_profile(hardware)
    rows = {}
    for spec in specs.values():
        sig = LayerSignature.from_spec(spec, prof.batch_size, prof.dtype)
        for r in profiling_ranks(spec, 8):
            ms = 0.1 + 0.01 * spec.max_rank * -(-(r or spec.max_rank) // step)
            rows[(sig.key, r)] = LutRow(hardware, sig, r, ms, ms, ms, 0.0, 3, dt.datetime.now(dt.timezone.utc),
                                        "t", "{}")
    RunLayout(store, run_id).write_lut(hardware, rows_to_table(list(rows.values())))


def test_joint_latency_targets_in_one_trial_meet_both_budgets(ray_cluster, tmp_path):
    from orchestrator.run_layout import open_store

    store = open_store(str(tmp_path / "store"))
    specs = haloc.models.layer_specs("resnet20")
    write_staircase_lut(store, "joint", "cpu", specs, 8)
    write_staircase_lut(store, "joint", "asic", specs, 32)
    spec = replace(TINY, hardware=("cpu", "asic"), joint=True, budget_metric="latency", rank_mode="latency",
                   budgets=(0.75,))
    (rec,) = run_search(RunLayout(store, "joint"), spec)
    assert rec["status"] == "done" and rec["targets"] == "cpu+asic"
    assert set(rec["predicted_cost"]) == {"cpu", "asic"} and rec["within_budget"] == {"cpu": True, "asic": True}
    for hw in ("cpu", "asic"):
        assert rec["predicted_cost"][hw] <= rec["budget_abs"][hw]
    tables = json.loads((tmp_path / "store" / "joint" / "search" / "trials.json").read_text())["tables"]
    assert tables["cpu+asic@0.75"]["asic"]["calibrated"] is False


@pytest.mark.slow
def test_sigkill_of_the_driver_then_rerun_completes(ray_cluster, tmp_path):
    store, trace = tmp_path / "store", tmp_path / "trace"
    trace.mkdir()
    spec = replace(TINY, epochs=3)
    args = [sys.executable, "-m", "tests.orchestrator.search_driver", "--store", str(store), "--run-id", "kill",
            "--address", ray_cluster.address, "--spec-json", json.dumps(spec.to_dict()), "--trace-dir", str(trace),
            "--epoch-sleep-s", "6"]
    log = open(tmp_path / "driver.log", "wb")
    driver = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    exp = store / "kill" / "search" / "grid"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        # Tune saves its experiment state at most every 10 s: wait until a saved state knows a checkpoint
        if any("checkpoint_00000" in f.read_text() for f in exp.glob("experiment_state*.json")):
            break
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("no checkpoint within 150 s: " + (tmp_path / "driver.log").read_text()[-3000:])
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    log.close()
    assert not (store / "kill" / "search" / "trials.json").exists()

    records = run_search(RunLayout(str(store), "kill"), spec, callbacks=[TraceStarts(trace)])
    assert [(r["status"], r["epochs"], r["restored"]) for r in records] == [("done", 3, True)]
    epochs = [line["start_epoch"] for line in starts(trace)]
    assert epochs[0] == 0 and len(epochs) >= 2 and epochs[-1] >= 1  # resumed from a checkpoint, not from scratch


def test_blockwise_mode_gives_trials_an_alpha_only_config_and_refuses_train_once():
    """The mode's own fields (haloc.SEARCH_MODES) reach every trial; the spec's warm-up does not."""
    from workers.search_trainable import _trial_config

    spec = replace(TINY, mode="blockwise")
    fields = spec.search_config_fields()
    assert fields["mode"] == "blockwise" and "warmup_epochs" not in fields and "arch_lr" not in fields
    ctx = type("Ctx", (), {"base": fields, "shared_supernet": None})()
    cfg = _trial_config(ctx, {"seed": 3})
    assert (cfg.train_weights, cfg.arch_objective, cfg.arch_lr, cfg.seed) == (False, "blockwise", 0.3, 3)
    assert _trial_config(type("Ctx", (), {"base": TINY.search_config_fields(), "shared_supernet": None})(),
                         {"seed": 0}).train_weights
    exact = replace(TINY, mode="blockwise-exact").search_config_fields()
    cfg = _trial_config(type("Ctx", (), {"base": exact, "shared_supernet": None})(), {"seed": 1})
    assert (cfg.train_weights, cfg.arch_objective, cfg.arch_solver, cfg.block_error) == (
        False, "blockwise", "exact", "branch")
    with pytest.raises(BadInputError, match="train_once"):
        replace(TINY, mode="blockwise", train_once=True)
    with pytest.raises(BadInputError, match="mode 'fast'"):
        replace(TINY, mode="fast")


def _trained_original(store_root: Path, run_id: str) -> str:
    """A ResNet-20 trained a few epochs on TINY's data (BatchNorm statistics that fit the original,
    not its truncations), saved where a spec's `weights` finds it."""
    from haloc.data import DataConfig, build_datasets, make_loader
    from haloc.train import TrainConfig, finetune

    model = haloc.models.create("resnet20", num_classes=10)
    train, _ = build_datasets(DataConfig(**TINY.data))
    finetune(model, None, make_loader(train, 32, shuffle=True, seed=0), None,
             TrainConfig(epochs=4, lr=0.05, kd_weight=0.0, device="cpu", log_every=0))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    Store.open(str(store_root)).write_bytes(f"{run_id}/original.pt", buf.getvalue())
    return "original.pt"


@pytest.mark.parametrize("mode", ["blockwise", "blockwise-exact"])
def test_blockwise_trials_on_ray_select_within_budget_with_their_evidence(ray_cluster, tmp_path, mode):
    """The blockwise modes end to end on the real Ray: no weight training, ranks within budget, and
    each epoch's held-out accuracy (of the argmax architecture) in the trial's curve. The selected
    ranks' held-out accuracy is the same measure (batch statistics in BatchNorm: the running ones fit
    the original, not its truncation, and read near chance); batch 32 puts the held-out part (26
    images) in one batch, so that measure does not depend on the batches' order."""
    weights = _trained_original(tmp_path / "store", "blockwise")
    spec = replace(TINY, budgets=(0.6,), seeds=(0,), mode=mode, batch_size=32, weights=weights)
    records = run_search(RunLayout(str(tmp_path / "store"), "blockwise"), spec)
    assert len(records) == 1 and records[0]["status"] == "done", records
    r = records[0]
    assert r["within_budget"] == {"flops": True} and r["epochs"] == 2
    assert all(0.0 <= h["heldout_acc"] <= 1.0 for h in r["history"]) and len(r["history"]) == 2
    if mode == "blockwise-exact":  # the exact answer is the last epoch's argmax: one measure, one number
        assert r["selected_heldout_acc"] == r["history"][-1]["heldout_acc"]
    # the kept weights (no weight training: the HOSVD truncation of the original) load at the selected ranks
    state = RunLayout(str(tmp_path / "store"), "blockwise").store.read_bytes(f"blockwise/{r['searched_state']}")
    student = haloc.rebuild("resnet20", r["ranks"], torch.load(io.BytesIO(state), weights_only=True))
    assert sum(p.numel() for p in student.parameters()) < haloc.params(haloc.models.create("resnet20"))


def test_blockwise_exact_searches_once_per_targets_and_budget_with_the_first_seed():
    """blockwise-exact has nothing random to sample: its grid has one seed (the first), the other
    modes one trial per seed; Optuna, which samples lam/beta and the seed, is refused for it."""
    from orchestrator.stages.search import grid_axes

    groups = [("cpu",), ("asic",)]
    seeds = replace(TINY, seeds=(4, 1, 2), budgets=(0.5, 0.7))
    exact = replace(seeds, mode="blockwise-exact")
    assert exact.deterministic and not seeds.deterministic
    assert grid_axes(exact, groups) == {"targets": ["cpu", "asic"], "budget": [0.5, 0.7], "seed": [4]}
    assert grid_axes(seeds, groups)["seed"] == [4, 1, 2]
    assert grid_axes(replace(seeds, mode="blockwise"), groups)["seed"] == [4, 1, 2]
    with pytest.raises(BadInputError, match="optuna_samples .*deterministic"):
        replace(exact, optuna_samples=4)
