"""Measure (signature, rank) items on one hardware profile -> LUT rows; and whole models end to end.

torch backend: build the module with random weights, move it to the profile's device and dtype,
time it (hw_profiles.timing). zigzag backend: simulate the layer sequence, cycles -> ms at the
profile's `clock_hz`; the simulator is deterministic, so mean = median = p90 and std = 0, repeats 1.
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import socket
from functools import lru_cache

from .lut import LutRow
from .profile import HardwareProfile
from .signature import LayerSignature, build_module, example_input, zigzag_workloads
from .timing import time_module


@lru_cache(maxsize=None)
def software_versions(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch",) if backend == "torch" else ("zigzag-dse",):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return json.dumps(versions, sort_keys=True)


def _now():
    return dt.datetime.now(dt.timezone.utc)


def measure_rows(profile: HardwareProfile, items: list[tuple[LayerSignature, int]]) -> list[LutRow]:
    """One LUT row per (signature, rank) item, in order."""
    measure = _measure_zigzag if profile.backend == "zigzag" else _measure_torch
    host, software = socket.gethostname(), software_versions(profile.backend)
    rows = []
    for sig, rank in items:
        stats, energy = measure(profile, sig, rank)
        rows.append(LutRow(profile.name, sig, rank, stats[0], stats[1], stats[2], stats[3], stats[4], _now(), host,
                           software, energy))
    return rows


def _measure_torch(profile: HardwareProfile, sig: LayerSignature, rank: int):
    from .signature import _torch_dtype

    module = build_module(sig, rank).to(profile.device, _torch_dtype(sig.dtype))
    x = example_input(sig, profile.device)
    s = time_module(module, x, profile.device, profile.threads, profile.warmup, profile.repeats)
    return (s.mean_ms, s.median_ms, s.p90_ms, s.std_ms, s.repeats), None


def _measure_zigzag(profile: HardwareProfile, sig: LayerSignature, rank: int):
    from .zigzag_backend import simulate

    result = simulate(zigzag_workloads(sig, rank), profile.accelerator)
    ms = result.cycles / profile.clock_hz * 1e3
    return (ms, ms, ms, 0.0, 1), float(result.energy_pj)


def measure_model_ms(profile: HardwareProfile, model_name: str, ranks: dict, batch: int) -> float:
    """End-to-end latency (ms) of `haloc.decompose(model, ranks)` at `batch` on this profile.

    torch: the median of the timed forwards. zigzag: the sum over every conv/linear layer of the
    decomposed model, including those that are not decomposed (a stem, say).
    """
    import torch

    import haloc
    from haloc.decomposition import layer_input_shapes

    from .signature import _torch_dtype

    model = haloc.models.create(model_name).eval()
    x = torch.randn(batch, *haloc.models.input_size(model_name))  # (N, C, H, W)
    if profile.backend == "torch":
        small = haloc.decompose(model, ranks).to(profile.device, _torch_dtype(profile.dtype))
        x = x.to(profile.device, _torch_dtype(profile.dtype))
        return time_module(small, x, profile.device, profile.threads, profile.warmup, profile.repeats).median_ms
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
        workloads += zigzag_workloads(sig, int(ranks.get(name, 0)))
    return simulate(workloads, profile.accelerator).cycles / profile.clock_hz * 1e3
