"""The rank-selection benchmark: its verdicts on synthetic cells, and its --quick run end to end."""
import json

import pytest

from benchmarks import bench_rank_selection as bench


def rec(method, top1, seed, cost=0.98, within=True, **extra):
    return {"method": method, "cell": f"flops-b0.2-s{seed}", "top1_finetuned": top1, "top1_decomposed": 0.5,
            "cost": cost, "budget": 1.0, "within_budget": within, "ranks": {"a": 4}, "whole_layers": 0,
            "min_rank": 4, "kxk_rank_le2": 0, **extra}


@pytest.mark.parametrize("gap,expected", [(0.05, True), (0.001, False)])
def test_discrimination_compares_the_spread_of_means_with_the_seeds_spread(gap, expected):
    specs = {"a": type("S", (), {"max_rank": 16, "kind": "tucker2"})()}
    stats = {"haloc": bench.method_stats([rec("haloc", 0.90 + gap + d, s) for s, d in enumerate((0, .01, -.01))],
                                         specs, {}),
             "uniform": bench.method_stats([rec("uniform", 0.90 + d, s) for s, d in enumerate((0, .01, -.01))],
                                           specs, {})}
    verdict = bench.discrimination(stats)
    assert verdict["discriminates"] is expected
    if expected:
        assert verdict["best"] == "haloc"


def test_every_haloc_variant_gets_its_own_verdict_against_the_best_baseline():
    """Two HALOC variants in a cell: each is judged on its own (the best of several would win by
    selection alone), the better one first."""
    specs = {"a": type("S", (), {"max_rank": 16, "kind": "tucker2"})()}
    spread = (0, .01, -.01)
    stats = {m: bench.method_stats([rec(m, top + d, s) for s, d in enumerate(spread)], specs, {})
             for m, top in (("haloc-a", 0.95), ("haloc-b", 0.80), ("uniform", 0.90), ("energy", 0.85))}
    verdict = bench.protocol_verdicts(stats)["equal fine-tune"]
    variants = verdict["halo_variants"]
    assert list(variants) == ["haloc-a", "haloc-b"]
    assert variants["haloc-a"]["verdict"] == "better beyond" and variants["haloc-b"]["verdict"] == "worse beyond"
    assert "haloc-a +5.00 points against uniform" in verdict["halo_text"]
    assert "haloc-b -10.00 points against uniform" in verdict["halo_text"]


def test_paired_difference_pairs_runs_by_cell_and_judges_against_twice_its_standard_error():
    """Two methods over 4 runs on 2 splits: the per-run difference cancels what a run shares (here a
    split's +-3 points), so a steady +1 point is beyond noise paired though not beyond the seeds' std."""
    specs = {"a": type("S", (), {"max_rank": 16, "kind": "tucker2"})()}
    cells = [bench.cell_name("flops", 0.2, seed, split) for split in (0, 1) for seed in (0, 1)]
    assert cells == ["flops-b0.2-s0", "flops-b0.2-s1", "flops-b0.2-split1s0", "flops-b0.2-split1s1"]
    shared = [0.93, 0.92, 0.87, 0.88]
    stats = {m: bench.method_stats([dict(rec(m, top + d, i), cell=c) for i, (c, top) in enumerate(zip(cells, shared))],
                                   specs, {}) for m, d in (("haloc", 0.01 + 0.001), ("uniform", 0.0))}
    stats["haloc"]["finetuned_by_run"][cells[1]] -= 0.002  # not exactly constant: a standard error > 0
    paired = bench.paired_difference(stats["haloc"], stats["uniform"])
    assert paired["runs"] == 4 and paired["beyond_2se"] and paired["mean"] == pytest.approx(0.0105)
    variant = bench.protocol_verdicts(stats)["equal fine-tune"]["halo_variants"]["haloc"]
    assert variant["verdict"] == "within" and "paired over 4 runs +1.05" in variant["text"]
    # runs only one method has are not paired; fewer than two pairs: no paired verdict
    one = dict(stats["uniform"], finetuned_by_run={cells[0]: 0.9, "flops-b0.2-split9s0": 0.9})
    assert bench.paired_difference(stats["haloc"], one) is None


def test_targets_and_budgets_can_add_a_target_the_plan_lacks(capsys, tmp_path):
    vgg = bench.PLANS["vgg16"]
    assert bench.plan_targets(vgg, [0.5], ["asic"]) == {"asic": [0.5]}
    assert bench.plan_targets(vgg, [0.2], None) == {"flops": [0.2]}  # every target of the plan
    assert bench.plan_targets(vgg, None, ["flops"]) == vgg.targets
    with pytest.raises(ValueError, match="vgg16 has no budgets for asic"):
        bench.plan_targets(vgg, None, ["asic"])
    assert bench.main(["--models", "vgg16", "--targets", "asic", "--phase", "cells", "--out", "/nonexistent"]) == 2
    assert "give them with --budgets" in capsys.readouterr().err
    # the summary (and latency) phases read the cells there are: no budgets needed to name a target
    assert bench.main(["--models", "vgg16", "--targets", "asic", "--phase", "summary", "--out", str(tmp_path)]) == 0
    assert "asic" not in bench.PLANS["vgg16"].targets  # a run never changes the shipped plans


def test_splits_are_the_digits_own():
    assert bench.main(["--data", "/nonexistent", "--splits", "1", "--phase", "summary"]) == 2


def test_distortion_is_the_digits_own_and_never_mixes_with_another_datas_results(tmp_path, capsys):
    assert bench.main(["--data", "/nonexistent", "--digits-distortion", "1", "--phase", "summary"]) == 2
    assert bench.main(["--digits-distortion", "-1", "--phase", "summary"]) == 2
    # an original trained on the plain digits: a distorted run in the same folder is refused, not mixed
    folder = tmp_path / "resnet20"
    folder.mkdir()
    (folder / "base.pt").write_bytes(b"")
    (folder / "base.json").write_text(json.dumps({"top1": 0.99, "data": "digits train (scikit-learn, seed 0)"}))
    with pytest.raises(SystemExit) as e:
        bench.main(["--out", str(tmp_path), "--digits-distortion", "1", "--phase", "cells", "--methods"])
    assert e.value.code == 2 and "its own --out folder" in capsys.readouterr().err


def test_data_is_cifar10_batches_or_an_imagefolder_of_its_own_classes(tmp_path, capsys):
    """--data: CIFAR-10's batches (10 classes) or an ImageFolder of its own count, which the original is
    built for, records, and the phases that take no --data read back."""
    from dataclasses import replace

    import torch

    from tests.fixtures.fake_data import write_fake_cifar10, write_fake_imagefolder

    cifar = write_fake_cifar10(tmp_path / "cifar", n_train=40, n_test=10)
    birds = write_fake_imagefolder(tmp_path / "birds", classes=3, per_class=5, size=40)
    assert bench.data_classes(str(cifar)) == 10 and bench.data_classes(str(birds)) == 3
    for data, n_train, n_test in ((cifar, 40, 10), (birds, 15, 15)):
        loaders = bench.build_loaders(str(data), 4)
        x, _ = next(iter(loaders.train))
        assert tuple(x.shape[1:]) == (3, 32, 32), data
        assert len(loaders.train.dataset) == n_train and len(loaders.test.dataset) == n_test
        # the search's alpha data is a held-out part of the training split, never the test split
        assert len(loaders.search_train.dataset) + len(loaders.heldout.dataset) == n_train
    folder = tmp_path / "out" / "resnet20"
    plan = replace(bench.PLANS["resnet20"], base_epochs=1, num_classes=3)
    base, meta = bench.base_model(plan, loaders, folder)
    assert base(torch.zeros(2, 3, 32, 32)).shape == (2, 3) and meta["num_classes"] == 3
    assert bench.recorded_classes(folder) == 3 and bench.recorded_classes(tmp_path / "none") is None
    assert bench.haloc_specs("resnet20", 3)["fc"].max_rank == 3 < bench.haloc_specs("resnet20")["fc"].max_rank
    (tmp_path / "odd").mkdir()
    assert bench.main(["--data", str(tmp_path / "odd"), "--phase", "summary", "--out", str(tmp_path / "o")]) == 2
    assert "is neither an ImageFolder tree" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_method_that_cannot_reach_the_budget_is_reported_as_such():
    specs = {"a": type("S", (), {"max_rank": 16, "kind": "tucker2"})()}
    st = bench.method_stats([rec("uniform", 0.0, 0, cost=1.3, within=False)], specs, {})
    assert not st["reachable"] and st["cost_fraction"].startswith("cannot reach")


def test_search_evidence_reads_the_history_and_the_seeds_agreement():
    history = [{"heldout_acc_argmax": 0.5 + 0.1 * e, "expected_flops": 1.2 - 0.1 * e, "budget_flops": 1.0,
                "alpha_entropy": 2.0 - e} for e in range(3)]
    recs = [rec("haloc", 0.9, s, history=history, argmax_cost=1.0, search_seconds=10.0,
                ranks={"a": 4, "b": 8 if s else 12}) for s in range(3)]
    same_search = {m: [dict(r, method=m) for r in recs] for m in ("haloc-sn", "haloc-long")}
    ev = bench.search_evidence({"haloc": recs, **same_search, "uniform": [rec("uniform", 0.9, 0)]})
    assert list(ev) == ["haloc"]
    assert [round(p["cost_over_budget"], 6) for p in ev["haloc"]["per_epoch"]] == [1.2, 1.1, 1.0]
    assert ev["haloc"]["rank_agreement"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # another split's run has another original: it is not paired with split 0's seeds
    other = dict(recs[0], cell="flops-b0.2-split3s0", ranks={"a": 16, "b": 16})
    ev = bench.search_evidence({"haloc": [*recs, other]})
    assert ev["haloc"]["rank_agreement"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert bench.search_evidence({"haloc": [recs[0], other]})["haloc"]["rank_agreement"] is None


def _wiring_plan():
    """--quick at its smallest: an original of 2 epochs, a third of an epoch per fine-tune, one search
    epoch, two random draws. Its accuracies mean nothing; what it still proves is the wiring: every
    method of both targets (FLOPs and a ZigZag LUT) runs, stays within its budget, and lands in the
    summary and the latency phase. `--quick` itself (5 epochs, whole fine-tune epochs) is the
    benchmark's own check that its figures move."""
    from dataclasses import replace

    return replace(_QUICK_PLAN(), base_epochs=2, finetune_epochs=0.34, random_n=2, calibration_samples=3,
                   search=dict(epochs=1, warmup_epochs=0))


_QUICK_PLAN = bench.quick_plan


@pytest.mark.slow
def test_quick_run_writes_every_method_and_a_summary(tmp_path, monkeypatch):
    """The --quick comparison on the real digits, at its smallest (_wiring_plan)."""
    monkeypatch.setattr(bench, "quick_plan", _wiring_plan)
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    cells = tmp_path / "resnet20" / "cells"
    flops = cells / "flops-b0.3-s0"
    methods = {p.stem for p in flops.glob("*.json")}
    assert {"haloc", "haloc-sn", "haloc-long", "uniform", "energy", "alds", "random", "random-best"} <= methods
    for m in methods:
        r = json.loads((flops / f"{m}.json").read_text())
        assert r["cost"] <= r["budget"] * (1 + 1e-9) and 0.0 <= r["top1_finetuned"] <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "resnet20/flops/0.3" in summary
    assert "haloc" in summary["resnet20/flops/0.3"]["evidence"]
    latency = tmp_path / "resnet20" / "latency.json"
    every = set(json.loads(latency.read_text())) - {"original", "load"}
    # --targets asic measures the asic cells' final models alone, not the FLOPs cells' as well
    asic_vectors = {bench._ranks_key({n: r for n, r in json.loads(f.read_text())["ranks"].items()
                                      if r < bench.haloc_specs("resnet20")[n].max_rank})
                    for f in (cells / "asic-b0.92-s0").glob("*.json")}
    latency.unlink()
    assert bench.main(["--quick", "--out", str(tmp_path), "--phase", "latency", "--targets", "asic"]) == 0
    measured = set(json.loads(latency.read_text())) - {"original", "load"}
    assert measured == asic_vectors and measured < every


def test_long_baselines_train_as_many_more_epochs_as_this_runs_search():
    plan = bench.ModelPlan("resnet20", rank_step=4, lut_rank_step=8, targets={}, finetune_epochs=2)
    assert bench.finetune_epochs_of("uniform", plan, {"epochs": 4}) == 2
    assert bench.finetune_epochs_of("uniform-long", plan) == 2 + 10  # the SearchConfig default
    assert bench.finetune_epochs_of("alds-long", plan, {"epochs": 4}) == 2 + 4


@pytest.mark.parametrize("epochs,steps", [(4, 23), (4 + 18 / 23, 23), (0.5, 23), (3.2, 17)])
def test_fine_tune_schedule_trains_the_matched_number_of_steps(epochs, steps):
    whole, per = bench.fine_tune_schedule(epochs, steps)
    total = whole * (per or steps)
    assert whole == max(1, -(-round(epochs * steps) // steps))
    assert round(epochs * steps) <= total < round(epochs * steps) + whole  # at most one step per epoch over


def test_an_alpha_only_search_is_counted_by_its_alpha_steps():
    """The -long baselines get an alpha-only search's alpha steps as extra fine-tune steps."""
    import torch

    def loader(n, batch, drop_last=False):
        ds = torch.utils.data.TensorDataset(torch.zeros(n, 1))
        return torch.utils.data.DataLoader(ds, batch_size=batch, drop_last=drop_last)

    loaders = bench.Loaders(train=loader(1437, 64), search_train=loader(1149, 64, True), heldout=loader(288, 64),
                            test=None, bn=None, name="t")
    plan = bench.ModelPlan("resnet20", rank_step=4, lut_rank_step=8, targets={}, finetune_epochs=4)
    alpha_only = {"mode": "blockwise", "epochs": 2}  # 17 batches, an alpha step every 2nd: 9 per epoch
    assert bench.search_epoch_equivalent(bench.search_cfg(plan, alpha_only), loaders) == pytest.approx(18 / 23)
    assert bench.finetune_epochs_of("alds-long", plan, alpha_only, loaders) == pytest.approx(4 + 18 / 23)
    assert bench.finetune_epochs_of("alds", plan, alpha_only, loaders) == 4
    assert bench.finetune_epochs_of("alds-long", plan, {"epochs": 2}, loaders) == 6  # weights trained: whole epochs
    # the exact solver: its tables' forwards per batch over 3 forwards a fine-tune step
    exact = {"mode": "blockwise-exact", "epochs": 1, "table_batches": 2}
    assert bench.search_epoch_equivalent(bench.search_cfg(plan, exact), loaders, 34.5) \
        == pytest.approx(2 * 34.5 / 3 / 23)
    with pytest.raises(ValueError, match="forwards"):
        bench.search_epoch_equivalent(bench.search_cfg(plan, exact), loaders)


def test_the_exact_solvers_work_counts_each_block_once_per_combination():
    """exact_table_forwards: ResNet-20's residual blocks are measured jointly, so a block of two convs
    with 3 candidates each costs 9 of its block forwards, plus 3 whole forwards per batch."""
    import torch

    import haloc
    from haloc.search_exact import error_groups, exact_table_forwards

    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model, torch.zeros(1, 3, 32, 32))
    few = {n: (1, s.max_rank) for n, s in specs.items()}
    many = {n: (1, 2, s.max_rank) for n, s in specs.items()}
    groups = dict((b, m) for b, m in error_groups(model, many))
    assert groups["layer1.0"] == ["layer1.0.conv1", "layer1.0.conv2"] and groups["fc"] == ["fc"]
    assert exact_table_forwards(model, specs, few) == pytest.approx(3 + 4, abs=0.01)  # 2x2 per block (fc: 2, tiny)
    assert exact_table_forwards(model, specs, many) == pytest.approx(3 + 9, abs=0.02)  # 3x3 per block
