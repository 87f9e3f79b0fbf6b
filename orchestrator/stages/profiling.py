"""Profiling fan-out: the missing LUT rows of a model, measured by profiler actors on every hardware,
and the end-to-end calibration with its quality gate.

    layout = RunLayout("runs", "r1")
    results = profile_model(layout, "resnet20", ["cpu", "asic"])
    cals = calibrate(layout, "resnet20", ["cpu", "asic"], samples=20)

Rows already in `<store>/<run>/luts/<hardware>.parquet` are not measured again. Work goes out in
batches of `rows_per_batch` items, at most two in flight per actor; after each finished batch the
hardware's whole LUT is merged and rewritten with one atomic store write, so a crash loses at most
the batches in flight and never leaves a half-written file. A batch whose actor died past its
restarts is sent to another actor of the same hardware. All hardware runs at once.

Protocol: every row records the timing protocol of the profile that measured it
(`HardwareProfile.protocol_key`); a row of another protocol (other threads, repeats, backend
options, an older measuring code) is measured again, never kept on resume.

Noise: a row the actor could not measure steadily (hw_profiles.measure: `noisy`) is measured again
after the others (NOISY_ROUNDS times at most). Still noisy, it is written flagged, with its spread:
one noisy row says little about a LUT, the calibration says much. The gate judges the LUT: the
calibration's held-out share within the profile's `calibration_tolerance` (10%) must reach its
`gate`. Below it, the rows of the configurations the LUT mispredicts are measured again
interleaved with the reference workload, every configuration is measured again, and the fit is
redone (the profile's `gate_rounds` times at most). Still below: NoisyLutError naming the figures
and the noisy rows, unless `accept_noisy` (the calibration says so).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import haloc
from haloc.errors import BadInputError
from hw_profiles.calibration import Calibration, cheapest_config, fit_calibration, gate_error, random_configs
from hw_profiles.lut import existing_keys, merge, noisy_rows, rows_to_table
from hw_profiles.profile import HardwareProfile, get_profile, profile_file
from hw_profiles.signature import LayerSignature, profiling_ranks

from ..cluster import connect, measurement_waves
from ..profiler_pool import ProfilerPool
from ..run_layout import RunLayout
from ..verdicts import NoisyLutError, gate_message

IN_FLIGHT_PER_ACTOR = 2
MAX_BATCH_ATTEMPTS = 3
NOISY_ROUNDS = 1  # rounds of measuring the noisy rows again, after the others


@dataclass
class ProfilingResult:
    hardware: str
    path: str  # relative to the store root
    total_rows: int  # rows the model needs on this hardware
    reused_rows: int  # already in the store
    measured_rows: int = 0  # written by this call (noisy ones kept included)
    noisy_rows: int = 0  # still noisy after every round, written flagged with their spread
    remeasured_rows: int = 0  # measured again after being noisy
    stale_rows: int = 0  # in the store under another timing protocol: measured again
    seconds: float = 0.0
    actor_nodes: list = field(default_factory=list)  # node id of each actor used

    @property
    def rate(self) -> float:
        return self.measured_rows / self.seconds if self.seconds else 0.0


# ---- what to measure ---------------------------------------------------------------------------------

def needed_items(specs: dict, profile: HardwareProfile, batch: int, rank_step: int) -> list[tuple[LayerSignature, int]]:
    """(signature, rank) pairs of the model on this profile; layers of equal signature share them."""
    sigs = {}
    for spec in specs.values():
        sig = LayerSignature.from_spec(spec, batch, profile.dtype)
        sigs.setdefault(sig.key, sig)
    return [(sig, r) for sig in sigs.values() for r in profiling_ranks(sig, rank_step)]


def _progress(enabled: bool, console=None, say=None):
    """Live bars (a terminal), or else `PlainProgress` lines through `say` (None: silent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    if not enabled:
        return PlainProgress(say)

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            seconds = task.finished_time or task.elapsed
            return Text(f"{task.completed / seconds:.1f} rows/s" if seconds else "- rows/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), console=console)


class PlainProgress:
    """The bars' interface (add_task / advance) as complete lines: one per hardware at its start, then
    at every further tenth of its rows or every 30 s, and at its end; each with rate and time left."""

    def __init__(self, say=None, every_s: float = 30.0):
        self.say, self.every_s, self.tasks = say, every_s, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, name: str, total: int) -> str:
        self.tasks[name] = {"name": name, "total": total, "done": 0, "start": time.monotonic(), "said": -1.0,
                            "said_at": 0.0}
        self._say(self.tasks[name])
        return name

    def advance(self, task: str, n: int) -> None:
        t = self.tasks[task]
        t["done"] += n
        now = time.monotonic()
        tenth = int(10 * t["done"] / t["total"]) if t["total"] else 10
        if tenth > t["said"] or now - t["said_at"] >= self.every_s or t["done"] >= t["total"]:
            self._say(t)

    def _say(self, t: dict) -> None:
        now = time.monotonic()
        t["said"] = int(10 * t["done"] / t["total"]) if t["total"] else 10
        t["said_at"] = now
        if self.say is None:
            return
        elapsed = now - t["start"]
        rate = t["done"] / elapsed if elapsed > 0 and t["done"] else None
        eta = (t["total"] - t["done"]) / rate if rate else None
        self.say({"kind": "profile_rows", "hardware": t["name"], "done": t["done"], "total": t["total"],
                  "rate": rate, "eta_s": eta})


# ---- fan-out -----------------------------------------------------------------------------------------

def _measure_all(layout: RunLayout, pool: ProfilerPool, queues: dict, tables: dict, results: dict, bar, tasks,
                 force_interleaved: bool = False) -> dict[str, list]:
    """Send every queued batch to the actors of its hardware; merge and write each finished batch's
    steady rows at once. Returns {hardware: [noisy rows]} (not written)."""
    import ray

    actors = pool.actors
    started = time.monotonic()
    pending = {}  # ObjectRef -> (hardware, actor index, batch, attempts)
    load = {name: [0] * len(group) for name, group in actors.items()}
    dead = {name: set() for name in actors}
    noisy = {name: [] for name in actors}

    def refill(name: str) -> None:
        for i, actor in enumerate(actors.get(name, [])):
            while queues[name] and i not in dead[name] and load[name][i] < IN_FLIGHT_PER_ACTOR:
                items, attempts = queues[name].popleft()
                pending[actor.measure.remote(items, force_interleaved)] = (name, i, items, attempts)
                load[name][i] += 1

    for name in queues:
        refill(name)
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
            steady = [r for r in rows if not r.noisy]
            noisy[name] += [r for r in rows if r.noisy]
            if steady:
                tables[name] = merge(tables[name], rows_to_table(steady))
                layout.write_lut(name, tables[name])  # atomic: whole file or nothing
            results[name].measured_rows += len(steady)
            results[name].seconds += time.monotonic() - started
            started = time.monotonic()
            if bar is not None:
                bar.advance(tasks[name], len(steady))
        refill(name)
    return noisy


def _batches(items: list, rows_per_batch: int) -> deque:
    return deque((items[i:i + rows_per_batch], 0) for i in range(0, len(items), rows_per_batch))


def profile_model(layout: RunLayout, model, profiles, batch: int | None = None,
                  rank_step: int | None = None, extra_profile_dirs=(), rows_per_batch: int = 8,
                  sim_actors_per_node: int = 2, progress: bool = True, address: str | None = None,
                  console=None, say=None) -> dict[str, ProfilingResult]:
    """Measure every missing LUT row of `model` on each profile; returns a result per hardware.

    `batch` and `rank_step` default to each profile's own. Connects to Ray (`address`, or the
    running/embedded one) and checks every profile's resource first. A row missing, or measured
    under another protocol, is measured; rows that stay noisy are written flagged, with their
    spread, for the calibration's gate to judge (`calibrate`).
    """
    if rows_per_batch < 1:
        raise BadInputError(f"rows_per_batch {rows_per_batch!r} must be an integer >= 1")
    profiles = [get_profile(p, extra_profile_dirs) for p in profiles]
    connect(address)
    waves = measurement_waves(profiles)
    if len(waves) > 1:  # a timing profile shares a node with a simulator: time it alone, afterwards
        results = {}
        for wave in waves:
            results.update(profile_model(layout, model, wave, batch, rank_step,
                                         extra_profile_dirs, rows_per_batch, sim_actors_per_node, progress, address,
                                         console, say))
        return results
    specs = haloc.models.layer_specs(model)

    tables, queues, results = {}, {}, {}
    for p in profiles:
        tables[p.name] = layout.read_lut(p.name)
        have = existing_keys(tables[p.name], p.protocol_key)
        anywhere = existing_keys(tables[p.name])
        items = needed_items(specs, p, batch or p.batch_size, rank_step or p.rank_step)
        todo = [(sig, r) for sig, r in items if (p.name, sig.key, r) not in have]
        queues[p.name] = _batches(todo, rows_per_batch)
        results[p.name] = ProfilingResult(p.name, layout.lut(p.name), len(items), len(items) - len(todo))
        results[p.name].stale_rows = sum((p.name, sig.key, r) in anywhere for sig, r in todo)
        if results[p.name].stale_rows and say is not None:
            say({"kind": "message", "text": f"profile {p.name}: {results[p.name].stale_rows} row(s) in the store were "
                                            "measured under another timing protocol; measuring them again"})
    busy = [p for p in profiles if queues[p.name]]
    if not busy:
        return results

    pool = ProfilerPool(busy, sim_actors_per_node).start()
    for p in busy:
        results[p.name].actor_nodes = list(pool.nodes[p.name])
    try:
        with _progress(progress, console, say) as bar:
            tasks = {p.name: bar.add_task(p.name, total=results[p.name].total_rows - results[p.name].reused_rows)
                     for p in busy}
            noisy = _measure_all(layout, pool, {p.name: queues[p.name] for p in busy}, tables, results, bar, tasks)
            for _ in range(NOISY_ROUNDS):  # later the machine may be quieter
                again = {name: _batches([(r.signature, r.rank) for r in rows], rows_per_batch)
                         for name, rows in noisy.items() if rows}
                if not again:
                    break
                for name, rows in noisy.items():
                    results[name].remeasured_rows += len(rows)
                noisy = _measure_all(layout, pool, again, tables, results, bar, tasks)
    finally:
        pool.stop()
    for name, rows in noisy.items():
        if not rows:
            continue
        # kept with their spread: the calibration's held-out gate decides whether the LUT is good
        tables[name] = merge(tables[name], rows_to_table(rows))
        layout.write_lut(name, tables[name])
        results[name].noisy_rows = len(rows)
        results[name].measured_rows += len(rows)  # written, flagged
    return results


# ---- end-to-end calibration --------------------------------------------------------------------------

def lut_fingerprint(table) -> str:
    """A digest of a LUT's keys and latencies: a calibration made on other rows is out of date."""
    import hashlib

    rows = sorted(zip(table.column("signature").to_pylist(), table.column("rank").to_pylist(),
                      table.column("latency_median_ms").to_pylist()))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def calibrate(layout: RunLayout, model, profiles, batch: int | None = None,
              samples: int = 20, seed: int = 0, extra_profile_dirs=(), sim_actors_per_node: int = 2,
              address: str | None = None, rank_step: int | None = None, accept_noisy: bool = False,
              reuse: bool = True, say=None) -> dict[str, Calibration]:
    """Measure the whole model for `samples` rank configs on each hardware (the original, the cheapest
    the LUT prices, and random ones spread over the cost range between: `random_configs`), fit
    measured ~ a + b * sum(LUT), hold it against the profile's gate (re-measuring the rows behind
    the errors), write `<hardware>.calibration.json` beside the LUT, and return the fits.

    Timed hardware measures every configuration interleaved in one actor (one machine, the same
    moments); simulators split them over their actors. With `reuse`, a calibration already made on
    the same LUT rows and gate, that passed (or was accepted), is kept. A gate still failed after its rounds
    raises NoisyLutError (the calibration is written first, for the record) unless `accept_noisy`.
    """
    profiles = [get_profile(p, extra_profile_dirs) for p in profiles]
    connect(address)
    waves = measurement_waves(profiles)
    if len(waves) > 1:  # as in profile_model: wall-clock timing never beside a simulator
        cals = {}
        for wave in waves:
            cals.update(calibrate(layout, model, wave, batch, samples, seed, extra_profile_dirs,
                                  sim_actors_per_node, address, rank_step, accept_noisy, reuse, say))
        return cals
    specs = haloc.models.layer_specs(model)
    tables = {p.name: layout.read_lut(p.name) for p in profiles}
    calibrations, todo, configs_of = {}, [], {}
    for p in profiles:
        lut = layout.latency_table(p.name)
        missing = lut.missing_layers(specs, batch or p.batch_size)
        if missing:
            raise BadInputError(f"LUT of {p.name!r} lacks layers {missing[:4]} of {model!r}; "
                                f"run profile_model first")
        # The original model is always one point (budgets are fractions of its cost, so the fit must hold
        # there), and the cheapest model the LUT prices (the floor of every budget); the rest spread between.
        configs = [{}, cheapest_config(specs, lut, batch or p.batch_size)]
        configs_of[p.name] = configs + random_configs(specs, max(0, samples - 2), seed, rank_step=rank_step)
        configs = configs_of[p.name]
        old = layout.read_calibration(p.name)
        # kept only when made on the same rows and judged by the same gate (a profile edited to another
        # gate or tolerance judges its LUT again)
        if reuse and old is not None and old.lut_fingerprint == lut_fingerprint(tables[p.name]) \
                and old.samples == len(configs) and (old.passed or accept_noisy) \
                and (old.gate, old.tolerance) == (p.gate, p.calibration_tolerance):
            calibrations[p.name] = old
        else:
            todo.append(p)
    if not todo:
        return calibrations
    pool = ProfilerPool(todo, sim_actors_per_node).start()
    try:
        for p in todo:
            if say is not None:
                how = "simulating" if p.is_simulator else "timing, interleaved,"
                say({"kind": "message", "text": f"profile {p.name}: calibrating the LUT: {how} "
                                                f"{len(configs_of[p.name])} "
                                                "whole models (the original, the cheapest the LUT prices and rank "
                                                "choices spread between)"})
            calibrations[p.name] = _calibrate_one(layout, pool, p, model, specs, configs_of[p.name],
                                                  batch or p.batch_size, tables)
    finally:
        pool.stop()
    for p in todo:
        cal = calibrations[p.name]
        if not cal.passed and not accept_noisy:
            raise NoisyLutError(gate_message(p.name, cal, noisy_rows(tables[p.name]), p.is_simulator, p.max_spread,
                                             profile_file(p.name, extra_profile_dirs)))
    return calibrations


def _measure_configs(pool: ProfilerPool, profile: HardwareProfile, model, configs: list[dict],
                     batch: int) -> list[dict]:
    """measure_models of every config: in one actor, interleaved, for timed hardware; split for simulators."""
    import ray

    group = pool.actors[profile.name] if profile.is_simulator else pool.actors[profile.name][:1]
    parts = ray.get([group[k].measure_models.remote(model, configs[k::len(group)], batch)
                     for k in range(len(group))])
    measured = [None] * len(configs)
    for k, part in enumerate(parts):
        measured[k::len(parts)] = part
    return measured


def _calibrate_one(layout: RunLayout, pool: ProfilerPool, profile: HardwareProfile, model, specs: dict,
                   configs: list[dict], batch: int, tables: dict) -> Calibration:
    from haloc.decomposition import lut_rank
    from hw_profiles.lut import LatencyTable

    remeasured, rounds = 0, 0
    while True:
        lut = LatencyTable(profile.name, tables[profile.name])
        measured = _measure_configs(pool, profile, model, configs, batch)
        sums = [lut.predict(specs, ranks, batch) for ranks in configs]
        extra = [{"ranks": ranks, "p10_ms": m["p10_ms"], "p90_ms": m["p90_ms"], "slowdown": m["slowdown"]}
                 for ranks, m in zip(configs, measured)]
        cal = fit_calibration(profile.name, sums, [m["median_ms"] for m in measured], profile.gate, extra,
                              tolerance=profile.calibration_tolerance)
        cal = cal.with_gate(profile.gate, remeasured_rows=remeasured, rounds=rounds,
                            lut_fingerprint=lut_fingerprint(tables[profile.name]))
        if cal.passed or rounds >= profile.gate_rounds or profile.is_simulator:
            layout.write_calibration(cal)
            return cal
        # The rows behind the mispredicted configurations, measured again interleaved with the reference.
        rounds += 1
        keys = {}
        for point in cal.points:
            if gate_error(point) > cal.tolerance:
                for name, spec in specs.items():
                    sig = LayerSignature.from_spec(spec, batch, profile.dtype)
                    keys[(sig.key, lut_rank(spec, point["ranks"].get(name)))] = sig
        items = [(sig, rank) for (_, rank), sig in keys.items()]
        result = {profile.name: ProfilingResult(profile.name, layout.lut(profile.name), len(items), 0)}
        noisy = _measure_all(layout, pool, {profile.name: _batches(items, 8)}, tables, result, None, None,
                             force_interleaved=True)
        remeasured += result[profile.name].measured_rows + len(noisy[profile.name])
