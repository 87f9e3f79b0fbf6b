"""Measure (signature, rank) items on one hardware profile -> LUT rows; and whole models end to end.

torch backend (and onnxruntime: the same, the module exported to ONNX and run by ONNX Runtime,
hw_profiles.ort_backend): build the module with random weights, move it to the profile's device and dtype,
time it (hw_profiles.timing), then time the reference workload once: a row measured while the
machine was slow, or whose spread is over the profile's `max_spread`, is measured again,
interleaved with the reference, and each block is divided by the reference's slowdown of its
moment. A row still over the spread after `max_remeasure` rounds is returned with `noisy=True`:
the caller decides (measure it again later, or accept it and say so).

zigzag backend: simulate the layer sequence, cycles -> ms at the profile's `clock_hz`; the simulator
is deterministic: one "repeat", no spread, never noisy.

Whole models (`measure_models`) are timed interleaved, A B C A B C ..., so that the original and
every compressed model see the same machine; their per-round samples come back too, for paired
comparisons.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import statistics
from functools import cache

from .lut import LutRow
from .profile import HardwareProfile
from .signature import LayerSignature, build_module, example_input, zigzag_workloads
from .timing import ReferenceClock, TimingStats, time_interleaved, time_module

# Rounds (layer block, reference block) of a re-measurement: enough for a median and a spread, few
# enough that a busy machine does not make profiling many times slower still.
CORRECTED_ROUNDS = 10


@cache
def software_versions(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    packages = {"torch": ("torch",), "onnxruntime": ("torch", "onnxruntime")}.get(backend, ("zigzag-dse",))
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return json.dumps(versions, sort_keys=True)


def _now():
    return dt.datetime.now(dt.timezone.utc)


def reference_clock(profile: HardwareProfile) -> ReferenceClock | None:
    """The reference workload of a timed profile, on its device (None for a simulator)."""
    if profile.is_simulator:
        return None
    from .signature import _torch_dtype

    return ReferenceClock(profile.device, profile.threads, _torch_dtype(profile.dtype), profile.warmup)


def measure_rows(profile: HardwareProfile, items: list[tuple[LayerSignature, int]],
                 clock: ReferenceClock | None = None, force_interleaved: bool = False) -> list[LutRow]:
    """One LUT row per (signature, rank) item, in order. `clock`: the reference workload (made here
    when not given); `force_interleaved`: measure every row interleaved with it (a re-measurement
    the calibration gate asked for)."""
    host, software = socket.gethostname(), software_versions(profile.backend)
    if profile.backend == "zigzag":
        rows = []
        for sig, rank in items:
            stats, energy = _measure_zigzag(profile, sig, rank)
            rows.append(_row(profile, sig, rank, stats, host, software, energy=energy))
        return rows
    clock = clock or reference_clock(profile)
    return [_measure_torch(profile, sig, rank, clock, force_interleaved, host, software) for sig, rank in items]


def _row(profile, sig, rank, stats: TimingStats, host, software, energy=None, remeasured=0, slowdown=None,
         noisy=False) -> LutRow:
    return LutRow(profile.name, sig, rank, stats.mean_ms, stats.median_ms, stats.p90_ms, stats.std_ms, stats.repeats,
                  _now(), host, software, energy, latency_p10_ms=stats.p10_ms, remeasured=remeasured,
                  slowdown=slowdown, noisy=noisy, protocol=profile.protocol_key)


def _measure_torch(profile: HardwareProfile, sig: LayerSignature, rank: int, clock: ReferenceClock,
                   force_interleaved: bool, host: str, software: str) -> LutRow:
    from .signature import _torch_dtype

    module = build_module(sig, rank).to(profile.device, _torch_dtype(sig.dtype))
    x = example_input(sig, profile.device)
    if profile.backend == "onnxruntime":  # the same layer, timed as ONNX in ONNX Runtime
        from .ort_backend import OrtModule

        module = OrtModule(module, x, profile.threads)
    stats = time_module(module, x, profile.device, profile.threads, profile.warmup, profile.repeats,
                        profile.min_run_time_s)
    slowdown = clock.slowdown()
    remeasured = 0
    noisy = force_interleaved or stats.spread > profile.max_spread or slowdown > profile.max_slowdown
    while noisy and remeasured < max(profile.max_remeasure, 1 if force_interleaved else 0):
        remeasured += 1
        stats, slowdown = corrected_timing(module, x, profile, clock)
        noisy = stats.spread > profile.max_spread
    return _row(profile, sig, rank, stats, host, software, remeasured=remeasured, slowdown=slowdown, noisy=noisy)


def corrected_timing(module, x, profile: HardwareProfile, clock: ReferenceClock) -> tuple[TimingStats, float]:
    """`module` timed in blocks interleaved with the reference (L R L R ...), each block divided by the
    reference's slowdown of its moment: the time it would have taken on the machine at its fastest.
    Returns (the corrected statistics, the median slowdown seen)."""
    samples, slowdowns = time_interleaved([(module, x)], CORRECTED_ROUNDS, profile.threads, warmup=1, clock=clock,
                                          block_s=0.005)
    corrected = [ms / slow for ms, slow in zip(samples[0], slowdowns)]
    return TimingStats.of(corrected), statistics.median(slowdowns)


def _measure_zigzag(profile: HardwareProfile, sig: LayerSignature, rank: int):
    from .zigzag_backend import simulate

    result = simulate(zigzag_workloads(sig, rank), profile.accelerator)
    return TimingStats.exact(result.cycles / profile.clock_hz * 1e3), float(result.energy_pj)


def measure_models(profile: HardwareProfile, model, configs: list[dict], batch: int,
                   rounds: int | None = None, clock: ReferenceClock | None = None) -> list[dict]:
    """End-to-end latency of `haloc.decompose(model, ranks)` for each ranks config, at `batch`.

    torch: every config's model is built first, then all are timed interleaved for `rounds` rounds
    (default: the profile's repeats), one block each per round, with the reference workload between
    blocks. zigzag: one simulation per config of every conv/linear layer of the decomposed model,
    those that are not decomposed (a stem, say) included.

    Returns per config {"median_ms", "p10_ms", "p90_ms", "repeats", "samples_ms" (one per round, in
    the same rounds for every config: pair them), "slowdown" (median reference slowdown; None: simulated)}.
    """
    import torch

    import haloc

    spec = haloc.models.ModelSpec.of(model)
    model = spec.create().eval()
    x = torch.randn(batch, *spec.size)  # (N, C, H, W)
    if profile.backend == "zigzag":
        return [_simulate_model(profile, model, x, ranks, batch) for ranks in configs]
    from .signature import _torch_dtype

    dtype = _torch_dtype(profile.dtype)
    x = x.to(profile.device, dtype)
    modules = [haloc.rebuild(spec, ranks).to(profile.device, dtype).eval() for ranks in configs]
    if profile.backend == "onnxruntime":
        from .ort_backend import OrtModule

        modules = [OrtModule(m, x, profile.threads) for m in modules]
    clock = clock or reference_clock(profile)
    with torch.inference_mode():
        for m in modules:  # warm-up of every model before the first timed round
            for _ in range(profile.warmup):
                m(x)
    samples, slowdowns = time_interleaved([(m, x) for m in modules], rounds or profile.repeats, profile.threads,
                                          warmup=0, clock=clock)
    slowdown = statistics.median(slowdowns) if slowdowns else None
    out = []
    for per_config in samples:
        stats = TimingStats.of(per_config)
        out.append({"median_ms": stats.median_ms, "p10_ms": stats.p10_ms, "p90_ms": stats.p90_ms,
                    "repeats": stats.repeats, "samples_ms": list(per_config), "slowdown": slowdown})
    return out


def _simulate_model(profile: HardwareProfile, model, x, ranks: dict, batch: int) -> dict:
    import torch

    from haloc.decomposition import layer_input_shapes

    from .zigzag_backend import simulate

    layers = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    shapes = layer_input_shapes(model, x, list(layers))
    workloads = []
    for name, m in layers.items():
        if isinstance(m, torch.nn.Linear):
            sig = LayerSignature("linear", m.in_features, m.out_features, batch=batch, dtype=profile.dtype)
        else:
            sig = LayerSignature("conv2d", m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride),
                                 tuple(m.padding), tuple(m.dilation), tuple(shapes[name][-2:]), batch, profile.dtype)
        rank = ranks.get(name)
        workloads += zigzag_workloads(sig, 0 if rank is None else max(rank) if isinstance(rank, (list, tuple))
                                      else int(rank))
    ms = simulate(workloads, profile.accelerator).cycles / profile.clock_hz * 1e3
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "repeats": 1, "samples_ms": [ms], "slowdown": None}


def measure_model_ms(profile: HardwareProfile, model, ranks: dict, batch: int) -> float:
    """The median end-to-end latency (ms) of one decomposed model (see measure_models)."""
    return measure_models(profile, model, [ranks], batch)[0]["median_ms"]
