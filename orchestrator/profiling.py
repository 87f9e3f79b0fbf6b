"""Profiling fan-out: the missing LUT rows of a model, measured by profiler actors on every hardware.

    results = profile_model("runs", "resnet20", ["cpu", "asic"], run_id="r1")
    cals = calibrate("runs", "resnet20", ["cpu", "asic"], run_id="r1", samples=20)

Rows already in `<store>/<run>/luts/<hardware>.parquet` are not measured again. Work goes out in
batches of `rows_per_batch` items, at most two in flight per actor; after each finished batch the
hardware's whole LUT is merged and rewritten with one atomic store write, so a crash loses at most
the batches in flight and never leaves a half-written file. A batch whose actor died past its
restarts is sent to another actor of the same hardware. All hardware runs at once.
"""
from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

from haloc.errors import BadInputError
from hw_profiles.calibration import Calibration, fit_calibration
from hw_profiles.lut import LatencyTable, empty_table, existing_keys, merge, parquet_bytes_to_table, rows_to_table
from hw_profiles.profile import HardwareProfile, get_profile
from hw_profiles.signature import LayerSignature, profiling_ranks

from .cluster import check_profiles_feasible, connect, measurement_waves
from .store import Store, validate_run_id

IN_FLIGHT_PER_ACTOR = 2
MAX_BATCH_ATTEMPTS = 3


@dataclass
class ProfilingResult:
    hardware: str
    path: str  # relative to the store root
    total_rows: int  # rows the model needs on this hardware
    reused_rows: int  # already in the store
    measured_rows: int = 0
    seconds: float = 0.0
    actor_nodes: list = field(default_factory=list)  # node id of each actor used

    @property
    def rate(self) -> float:
        return self.measured_rows / self.seconds if self.seconds else 0.0


# ---- store I/O (the only place that touches the LUT files) ------------------------------------------

def open_store(store) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def lut_path(hardware: str, run_id: str | None = None) -> str:
    return f"{run_id}/luts/{hardware}.parquet" if run_id else f"luts/{hardware}.parquet"


def calibration_path(hardware: str, run_id: str | None = None) -> str:
    return lut_path(hardware, run_id).removesuffix(".parquet") + ".calibration.json"


def read_store_lut(store: Store, path: str):
    """The LUT at `path` (empty if absent); a corrupt file or another schema version -> BadInputError."""
    if not store.exists(path):
        return empty_table()
    source = store.uri_of(path) if hasattr(store, "uri_of") else f"{store.uri.rstrip('/')}/{path}"
    return parquet_bytes_to_table(store.read_bytes(path), source)


def load_latency_table(store, hardware: str, run_id: str | None = None) -> LatencyTable:
    store = open_store(store)
    return LatencyTable(hardware, read_store_lut(store, lut_path(hardware, run_id)))


def load_calibration(store, hardware: str, run_id: str | None = None) -> Calibration | None:
    store = open_store(store)
    path = calibration_path(hardware, run_id)
    return Calibration.from_dict(store.read_json(path)) if store.exists(path) else None


# ---- what to measure ---------------------------------------------------------------------------------

def model_specs(model_name: str) -> dict:
    """Decomposable layers of `model_name`, traced so every conv knows its input size."""
    import torch

    import haloc

    model = haloc.models.create(model_name)
    return haloc.decomposable_layers(model, torch.zeros(1, *haloc.models.input_size(model_name)))  # (1, C, H, W)


def needed_items(specs: dict, profile: HardwareProfile, batch: int, rank_step: int) -> list[tuple[LayerSignature, int]]:
    """(signature, rank) pairs of the model on this profile; layers of equal signature share them."""
    sigs = {}
    for spec in specs.values():
        sig = LayerSignature.from_spec(spec, batch, profile.dtype)
        sigs.setdefault(sig.key, sig)
    return [(sig, r) for sig in sigs.values() for r in profiling_ranks(sig, rank_step)]


# ---- actors ------------------------------------------------------------------------------------------

def _start_actors(profiles: list[HardwareProfile], sim_actors_per_node: int) -> dict[str, list]:
    import ray

    from workers.profiler import LayerProfiler, actor_options

    placement = check_profiles_feasible(profiles)  # fails within seconds, before any request is submitted
    actors = {}
    for p in profiles:
        actors[p.name] = [LayerProfiler.options(**opts).remote(p.to_dict())
                          for node, amount in placement[p.name]
                          for opts in actor_options(p, node.node_id, amount, sim_actors_per_node)]
    ids = {name: ray.get([a.node_id.remote() for a in group]) for name, group in actors.items()}
    return {name: list(zip(group, ids[name])) for name, group in actors.items()}


def _stop_actors(actors: dict) -> None:
    import ray

    for group in actors.values():
        for actor, _ in group:
            ray.kill(actor, no_restart=True)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            seconds = task.finished_time or task.elapsed
            return Text(f"{task.completed / seconds:.1f} rows/s" if seconds else "- rows/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), disable=not enabled)


# ---- fan-out -----------------------------------------------------------------------------------------

def profile_model(store, model_name: str, profiles, batch: int | None = None, run_id: str | None = None,
                  rank_step: int | None = None, extra_profile_dirs=(), rows_per_batch: int = 8,
                  sim_actors_per_node: int = 2, progress: bool = True, address: str | None = None,
                  ) -> dict[str, ProfilingResult]:
    """Measure every missing LUT row of `model_name` on each profile; returns a result per hardware.

    `batch` and `rank_step` default to each profile's own. Connects to Ray (`address`, or the
    running/embedded one) and checks every profile's resource first.
    """
    import ray

    if rows_per_batch < 1:
        raise BadInputError(f"rows_per_batch {rows_per_batch!r} must be an integer >= 1")
    if run_id is not None:
        validate_run_id(run_id)  # it becomes a folder: refused before Ray starts
    store = open_store(store)
    profiles = [get_profile(p, extra_profile_dirs) for p in profiles]
    connect(address)
    waves = measurement_waves(profiles)
    if len(waves) > 1:  # a timing profile shares a node with a simulator: time it alone, afterwards
        results = {}
        for wave in waves:
            results.update(profile_model(store, model_name, wave, batch, run_id, rank_step, extra_profile_dirs,
                                         rows_per_batch, sim_actors_per_node, progress, address))
        return results
    specs = model_specs(model_name)

    tables, queues, results = {}, {}, {}
    for p in profiles:
        path = lut_path(p.name, run_id)
        tables[p.name] = read_store_lut(store, path)
        have = existing_keys(tables[p.name])
        items = needed_items(specs, p, batch or p.batch_size, rank_step or p.rank_step)
        todo = [(sig, r) for sig, r in items if (p.name, sig.key, r) not in have]
        queues[p.name] = deque((todo[i:i + rows_per_batch], 0) for i in range(0, len(todo), rows_per_batch))
        results[p.name] = ProfilingResult(p.name, path, len(items), len(items) - len(todo))
    busy = [p for p in profiles if queues[p.name]]
    if not busy:
        return results

    actors = _start_actors(busy, sim_actors_per_node)
    for p in busy:
        results[p.name].actor_nodes = [node for _, node in actors[p.name]]
    started = time.monotonic()
    pending = {}  # ObjectRef -> (hardware, actor index, batch, attempts)
    load = {name: [0] * len(group) for name, group in actors.items()}
    dead = {name: set() for name in actors}

    def refill(name: str) -> None:
        for i, (actor, _) in enumerate(actors[name]):
            while queues[name] and i not in dead[name] and load[name][i] < IN_FLIGHT_PER_ACTOR:
                items, attempts = queues[name].popleft()
                pending[actor.measure.remote(items)] = (name, i, items, attempts)
                load[name][i] += 1

    try:
        with _progress(progress) as bar:
            tasks = {p.name: bar.add_task(p.name, total=results[p.name].total_rows - results[p.name].reused_rows)
                     for p in busy}
            for p in busy:
                refill(p.name)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name, i, items, attempts = pending.pop(ready[0])
                load[name][i] -= 1
                try:
                    rows = ray.get(ready[0])
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                        ray.exceptions.ActorUnschedulableError) as e:
                    # past its restarts, or its node is gone (then its restart cannot be placed, since the
                    # actor is pinned there: ActorUnschedulableError): give its batch to another
                    dead[name].add(i)
                    if attempts + 1 >= MAX_BATCH_ATTEMPTS or len(dead[name]) == len(actors[name]):
                        raise RuntimeError(f"profiling {name!r}: no profiler actor left to measure a batch "
                                           f"({len(dead[name])} of {len(actors[name])} dead): {e}") from e
                    queues[name].appendleft((items, attempts + 1))
                else:
                    tables[name] = merge(tables[name], rows_to_table(rows))
                    store.write_parquet(results[name].path, tables[name])  # atomic: whole file or nothing
                    results[name].measured_rows += len(rows)
                    results[name].seconds = time.monotonic() - started
                    bar.advance(tasks[name], len(rows))
                refill(name)
    finally:
        _stop_actors(actors)
    return results


# ---- end-to-end calibration --------------------------------------------------------------------------

def random_configs(specs: dict, samples: int, seed: int = 0, keep_share: float = 0.2,
                   rank_step: int | None = None) -> list[dict]:
    """Random {layer: rank} configs: each layer kept whole with probability `keep_share`, else a rank
    drawn uniformly in 1..max_rank-1 (a rank at max_rank would cost the original layer anyway), or,
    with `rank_step`, from the profiling grid: the ranks a search picks from, whose layer shapes the
    profiling stage has already simulated (ZigZag's disk cache then serves them)."""
    rng = random.Random(seed)
    configs = []
    for _ in range(samples):
        config = {}
        for n, s in specs.items():
            if s.max_rank <= 1 or rng.random() < keep_share:
                continue
            if rank_step:
                grid = [r for r in profiling_ranks(s, rank_step) if 0 < r < s.max_rank]
                config[n] = rng.choice(grid) if grid else rng.randint(1, s.max_rank - 1)
            else:
                config[n] = rng.randint(1, s.max_rank - 1)
        configs.append(config)
    return configs


def calibrate(store, model_name: str, profiles, batch: int | None = None, run_id: str | None = None,
              samples: int = 20, seed: int = 0, extra_profile_dirs=(), sim_actors_per_node: int = 2,
              address: str | None = None, rank_step: int | None = None) -> dict[str, Calibration]:
    """Measure the whole model for `samples` random rank configs on each hardware, fit
    measured ~ a + b * sum(LUT), write `<hardware>.calibration.json` beside the LUT, return the fits."""
    import ray

    if run_id is not None:
        validate_run_id(run_id)
    store = open_store(store)
    profiles = [get_profile(p, extra_profile_dirs) for p in profiles]
    connect(address)
    waves = measurement_waves(profiles)
    if len(waves) > 1:  # as in profile_model: wall-clock timing never beside a simulator
        cals = {}
        for wave in waves:
            cals.update(calibrate(store, model_name, wave, batch, run_id, samples, seed, extra_profile_dirs,
                                  sim_actors_per_node, address, rank_step))
        return cals
    specs = model_specs(model_name)
    # The original model is always one point: budgets are fractions of its cost, so the fit must hold there.
    configs = [{}] + random_configs(specs, max(1, samples - 1), seed, rank_step=rank_step)
    luts = {p.name: load_latency_table(store, p.name, run_id) for p in profiles}
    for p in profiles:
        missing = luts[p.name].missing_layers(specs, batch or p.batch_size)
        if missing:
            raise BadInputError(f"LUT of {p.name!r} lacks layers {missing[:4]} of {model_name!r}; "
                                f"run profile_model first")
    actors = _start_actors(profiles, sim_actors_per_node)
    try:
        refs = {}
        for p in profiles:  # split the configs over the hardware's actors; all hardware at once
            group = actors[p.name]
            refs[p.name] = [group[k][0].measure_models.remote(model_name, configs[k::len(group)], batch or p.batch_size)
                            for k in range(len(group))]
        calibrations = {}
        for p in profiles:
            parts = ray.get(refs[p.name])
            measured = [None] * len(configs)
            for k, part in enumerate(parts):
                measured[k::len(parts)] = part
            b = batch or p.batch_size
            sums = [luts[p.name].predict(specs, ranks, b) for ranks in configs]
            cal = fit_calibration(p.name, sums, measured)
            store.write_json(calibration_path(p.name, run_id), cal.to_dict())
            calibrations[p.name] = cal
    finally:
        _stop_actors(actors)
    return calibrations
