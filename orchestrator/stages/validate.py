"""The validate stage: accuracy, cost, measured and predicted latency, and export of each fine-tuned model.

    spec = ValidateSpec(model="resnet20", hardware=("cpu", "asic"), data={"kind": "demo"})
    records = run_validate(RunLayout("runs", "r1"), configs, spec)  # {config_id: record}

Per config (the fine-tune stage's `<run>/finetune/<config_id>/final.pt`):
- top-1/top-5 on the validation set (a Ray task, on a GPU when the cluster has one);
- FLOPs, params, FLOPs reduction and the FLOPs-ideal speedup (original FLOPs / compressed FLOPs);
- end-to-end latency on every hardware target, measured by one profiler actor per hardware, pinned by
  the profile's Ray resource (zigzag hardware: simulated), and the speedup over the original model
  measured by the same actor in the same session (the first measurement per hardware is kept in
  `<run>/validate/baseline.json`);
- the latency the LUT predicts (sum of the layers' LUT latencies, calibrated when a calibration
  exists), and its error against the measurement;
- `<run>/models/<config_id>/{model.pt, ranks.json, model.onnx}`, the ONNX checked in onnxruntime.

Each config's record is `<run>/validate/<config_id>.json`, written atomically after its artifacts:
a rerun skips configs whose record exists (resume).
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from haloc.config import from_dict_strict
from haloc.errors import BadInputError
from hw_profiles.profile import profiles_for

from ..artifacts import as_selected
from ..profiler_pool import ProfilerPool
from ..run_layout import EXPORT_FILES, RunLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidateSpec:
    model: str | dict = "resnet20"  # a registry name or a haloc.models.ModelSpec's dict form
    hardware: tuple[str, ...] = ("cpu",)  # hardware profile names: latency measured on each
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    num_classes: int | None = None  # None: the registry's default (demo: the data's num_classes)
    weights: str | None = None  # the original model's weights, as FinetuneSpec.weights
    eval_batch_size: int = 128
    latency_batch: int | None = None  # None: each profile's own batch size
    onnx_atol: float = 1e-3  # a float32 model through two runtimes: differences ~1e-5 are normal
    extra_profile_dirs: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "hardware", tuple(self.hardware))
        object.__setattr__(self, "extra_profile_dirs", tuple(self.extra_profile_dirs))
        if self.eval_batch_size < 1 or (self.latency_batch is not None and self.latency_batch < 1):
            raise BadInputError(f"validate spec: eval_batch_size={self.eval_batch_size!r} and latency_batch="
                                f"{self.latency_batch!r} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ValidateSpec:
        return from_dict_strict(cls, data, "validate spec")

    def class_count(self) -> int | None:
        if self.num_classes is not None:
            return self.num_classes
        return self.data.get("num_classes", 10) if self.data.get("kind", "demo") == "demo" else None


# ---- pieces ---------------------------------------------------------------------------------------

def _evaluate_task(model, num_classes, ranks: dict, state: dict, data: dict, batch_size: int) -> dict:
    """top-1/top-5 of the model rebuilt from (name, ranks, state) on the validation set (runs in Ray)."""
    import haloc
    from haloc.data import DataConfig, build_datasets, make_loader
    from haloc.train import evaluate
    from workers.data_cache import local_data_config  # runs on a node: an s3:// data set is synced there

    model = haloc.rebuild(model, ranks, state, num_classes)

    _, val = build_datasets(DataConfig.from_dict(local_data_config(data)))
    return evaluate(model, make_loader(val, batch_size, shuffle=False), "auto")


def _lut_predictions(layout: RunLayout, model, profiles, batches: dict, rank_sets: dict) -> dict:
    """{hw: {key: (lut_sum_ms, predicted_ms)}} for each rank set; hardware without a LUT is left out."""
    import haloc

    specs = haloc.models.layer_specs(model)
    out = {}
    for p in profiles:
        lut = layout.latency_table(p.name)
        if lut.table.num_rows == 0 or lut.missing_layers(specs, batches[p.name]):
            continue
        cal = layout.read_calibration(p.name)
        out[p.name] = {}
        for key, ranks in rank_sets.items():
            lut_sum = lut.predict(specs, ranks, batches[p.name])
            out[p.name][key] = (lut_sum, cal.predict(lut_sum) if cal else lut_sum)
    return out


def _export(model, spec, ranks: dict, example, store, paths: dict, atol: float) -> float:
    """model.pt + ranks.json + model.onnx into the store; returns the ONNX max |diff| against PyTorch."""
    from haloc.export import check_onnx, export_onnx, save_compressed

    with tempfile.TemporaryDirectory() as tmp:
        files = save_compressed(model, spec, ranks, tmp)
        onnx = export_onnx(model, example, Path(tmp) / EXPORT_FILES["onnx"], model_name=spec, ranks=ranks)
        diff = check_onnx(onnx, model, example, rtol=1e-3, atol=atol)
        for kind, local in (("model", files["model"]), ("ranks", files["ranks"]), ("onnx", onnx)):
            store.write_bytes(paths[kind], Path(local).read_bytes())
    return diff


def _budget_checks(config, session: dict, originals: dict, base_flops: int, flops: int) -> dict:
    """The measured verdict on each of the config's targets (orchestrator.verdicts)."""
    from ..verdicts import budget_check, flops_check

    if config.budget_metric == "flops":
        return {"flops": flops_check(config.budget, base_flops, flops)}
    return {hw: budget_check(config.budget, originals[hw], session[hw]) for hw in config.targets if hw in session}


def _ratio(a, b):
    return a / b if a is not None and b and math.isfinite(a) and math.isfinite(b) else None


# ---- the stage ------------------------------------------------------------------------------------

def run_validate(layout: RunLayout, configs: list[dict], spec: ValidateSpec | dict, *, profiles: dict | None = None,
                 address: str | None = None, progress=None) -> dict[str, dict]:
    """Validate every config whose record is missing; returns {config_id: record} for all configs.
    `profiles`: {name: HardwareProfile} of the spec's hardware (None: looked up by name);
    `progress(event)`: a line per accuracy and per hardware's latencies as they arrive.

    The original model's record (`baseline.json`) is measured on the hardware it lacks and stored;
    `records["__baseline__"]` is not returned: read it with `load_baseline`.
    """
    import torch

    import haloc

    spec = spec if isinstance(spec, ValidateSpec) else ValidateSpec.from_dict(spec)
    profiles = list(profiles_for(spec.hardware, profiles, spec.extra_profile_dirs, what="validate spec").values())
    batches = {p.name: spec.latency_batch or p.batch_size for p in profiles}
    model = haloc.models.ModelSpec.of(spec.model)
    configs = as_selected(configs, model.name)
    ids = [c.config_id for c in configs]
    records = {cid: rec for cid in ids if (rec := layout.read_record(cid)) is not None}
    todo = [(cid, c) for cid, c in zip(ids, configs) if cid not in records]
    base = layout.read_baseline(required=False)
    missing_hw = [p for p in profiles if base is None or p.name not in base.get("latency_ms", {})]
    if not todo and not missing_hw:
        return {cid: records[cid] for cid in ids}

    num_classes = spec.class_count()
    model = haloc.models.ModelSpec(model.name, num_classes or model.num_classes, model.input_size)
    example = torch.randn(*model.example().shape)  # (1, C, H, W)
    state = layout.original_state(spec.weights, model, num_classes)
    original = haloc.rebuild(model, {}, state).eval()
    states = {cid: layout.read_final_state(cid) for cid, _ in todo}  # missing weights fail before Ray

    rank_sets = [{}] + [c.ranks for _, c in todo]  # the original first: every session times it too
    accuracy, latencies = _measure(model, original, todo, states, rank_sets, profiles, batches, spec,
                                   need_baseline=base is None, address=address,
                                   say=progress or (lambda _event: None))
    predictions = _lut_predictions(layout, model, profiles, batches,
                                   {"__baseline__": {}, **{cid: c.ranks for cid, c in todo}})
    base_flops, base_params = haloc.flops(original, example), haloc.params(original)
    if base is None:
        base = _baseline_record(model, base_flops, base_params, accuracy["__baseline__"])
    for p in profiles:  # measured now: the baseline keeps its first measurement per hardware
        first = latencies[p.name][0]
        base["latency_ms"].setdefault(p.name, first["median_ms"])
        base.setdefault("latency_p10_ms", {}).setdefault(p.name, first["p10_ms"])
        base.setdefault("latency_p90_ms", {}).setdefault(p.name, first["p90_ms"])
        base["latency_batch"].setdefault(p.name, batches[p.name])
        if p.name in predictions:
            base["lut_sum_ms"].setdefault(p.name, predictions[p.name]["__baseline__"][0])
            base["predicted_latency_ms"].setdefault(p.name, predictions[p.name]["__baseline__"][1])
    layout.write_baseline(base)

    for k, (cid, config) in enumerate(todo, start=1):
        compressed = haloc.rebuild(model, config.ranks, states[cid]).eval()
        paths = layout.export_paths(cid)
        onnx_diff = _export(compressed, model, config.ranks, example, layout.store, paths, spec.onnx_atol)
        session = {p.name: latencies[p.name][k] for p in profiles}  # measured beside the original (index 0)
        originals = {p.name: latencies[p.name][0] for p in profiles}
        record = _config_record(config, model, compressed, example, (base_flops, base_params), accuracy[cid],
                                session, originals, predictions, batches)
        record.update(artifacts=paths, onnx_max_abs_diff=onnx_diff)
        layout.write_record(cid, record)  # last: its presence means "validated"
        records[cid] = record
    return {cid: records[cid] for cid in ids}


def _measure(model, original, todo, states, rank_sets, profiles, batches, spec, *, need_baseline, address,
             say) -> tuple[dict, dict]:
    """On Ray: ({config_id or "__baseline__": accuracy}, {hardware: [latency of each of `rank_sets`]}).

    Simulators run beside the evaluations; wall-clock timings run afterwards, when nothing else of this
    stage keeps the nodes' CPUs busy (evaluation tasks may land on any node), one wave of timed
    profiles at a time: a timing actor takes its node's whole resource, and profiles that share a
    node (cpu and onnxruntime time the same CPU) take turns."""
    import ray

    from ..cluster import connect, measurement_waves

    connect(address)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    evaluate = ray.remote(num_cpus=1, num_gpus=gpus)(_evaluate_task)
    simulated = [p for p in profiles if p.is_simulator]
    timed_later = [p for p in profiles if not p.is_simulator]
    accuracy, latencies = {}, {}
    pool = ProfilerPool(simulated, first_only=True).start()
    try:
        eval_refs = {cid: evaluate.remote(model, None, c.ranks, states[cid], spec.data,
                                          spec.eval_batch_size) for cid, c in todo}
        if need_baseline:
            eval_refs["__baseline__"] = evaluate.remote(model, None, {}, original.state_dict(), spec.data,
                                                        spec.eval_batch_size)
        lat_refs = {p.name: pool.actors[p.name][0].measure_models.remote(model, rank_sets, batches[p.name])
                    for p in simulated}
        for cid, ref in eval_refs.items():
            accuracy[cid] = ray.get(ref)
            name = "the original" if cid == "__baseline__" else cid
            say({"kind": "validate", "what": f"{name}: top-1 {accuracy[cid]['top1']:.3f} on {accuracy[cid]['n']} "
                                             "validation images"})
        for name, ref in lat_refs.items():  # [baseline, config...] per hw
            latencies[name] = ray.get(ref)
            say({"kind": "validate", "what": f"{name}: {len(rank_sets)} models simulated"})
    finally:
        pool.stop()
    for wave in measurement_waves(timed_later) if timed_later else []:
        with ProfilerPool(wave, first_only=True) as timers:
            say({"kind": "validate", "what": f"timing {len(rank_sets)} models (the original first) on "
                                             f"{', '.join(p.name for p in wave)}, interleaved"})
            timed = {p.name: timers.actors[p.name][0].measure_models.remote(model, rank_sets, batches[p.name])
                     for p in wave}
            for name, ref in timed.items():
                latencies[name] = ray.get(ref)
                say({"kind": "validate", "what": f"{name}: {len(rank_sets)} models timed"})
    return accuracy, latencies


def _baseline_record(model, flops: int, params: int, acc: dict) -> dict:
    """The original model's record before its latencies (filled per hardware as they are measured)."""
    return {"model": model.name, "num_classes": model.num_classes, "input_size": list(model.size),
            "flops": flops, "params": params,
            "top1": acc["top1"], "top5": acc["top5"], "val_loss": acc["loss"], "n_val": acc["n"],
            "latency_ms": {}, "latency_batch": {}, "lut_sum_ms": {}, "predicted_latency_ms": {}}


def _config_record(config, model, compressed, example, base_cost: tuple[int, int], acc: dict, session: dict,
                   originals: dict, predictions: dict, batches: dict) -> dict:
    """One config's validate record (artifacts added by the caller): accuracy, cost, and the latencies
    of `session` ({hw: measurement}) against the original's of the same session (`originals`)."""
    import haloc

    base_flops, base_params = base_cost
    flops, params = haloc.flops(compressed, example), haloc.params(compressed)
    measured = {h: m["median_ms"] for h, m in session.items()}
    lut_sum = {h: v[config.config_id][0] for h, v in predictions.items()}
    predicted = {h: v[config.config_id][1] for h, v in predictions.items()}
    return {
        "config_id": config.config_id, "model": model.name, "targets": list(config.targets), "hardware": config.key,
        "budget": config.budget, "budget_metric": config.budget_metric,
        "seeds": list(config.seeds), "best_seed": config.best_seed, "ranks": config.ranks,
        "flops": flops, "params": params, "flops_reduction": 1 - flops / base_flops,
        "params_reduction": 1 - params / base_params, "ideal_speedup": base_flops / flops,
        "top1": acc["top1"], "top5": acc["top5"], "val_loss": acc["loss"], "n_val": acc["n"],
        "measured_latency_ms": measured, "latency_batch": dict(batches),
        "measured_latency_p10_ms": {h: m["p10_ms"] for h, m in session.items()},
        "measured_latency_p90_ms": {h: m["p90_ms"] for h, m in session.items()},
        # against the original measured in the same session (same actor, interleaved: the same moments)
        "baseline_latency_ms": {h: m["median_ms"] for h, m in originals.items()},
        "speedup": {h: _ratio(originals[h]["median_ms"], measured[h]) for h in session},
        "budget_check": _budget_checks(config, session, originals, base_flops, flops),
        "within_budget": config.within_budget,
        "lut_sum_ms": lut_sum, "predicted_latency_ms": predicted,
        "lut_error": {h: _ratio(predicted[h] - measured[h], measured[h]) for h in predicted},
        "search_predicted_cost": config.predicted_cost,
        # the fraction of the original each latency search aimed at, a margin below the budget
        "search_aimed_fraction": {t: config.budget * a / config.budget_abs[t] for t, a in config.aimed_abs.items()
                                  if config.budget_abs.get(t)},
        "heldout_acc": config.heldout_acc, "heldout_acc_mean": config.heldout_acc_mean,
        "heldout_acc_std": config.heldout_acc_std, "rank_agreement": config.rank_agreement,
        "search": dict(config.search),  # {"mode", "deterministic"}: the report shows no spread of one run
    }


def load_baseline(layout: RunLayout) -> dict:
    return layout.read_baseline()
