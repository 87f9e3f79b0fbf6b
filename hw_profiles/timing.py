"""Timing of one module on one input with torch: CPU wall clock with fixed threads, or CUDA events.

Protocol: `warmup` untimed runs, then `repeats` timed runs, each a forward under
`torch.inference_mode`. On CUDA each run is bracketed by two events and the device is synchronised
before reading them (kernels are asynchronous, a host clock would time the launch only).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TimingStats:
    mean_ms: float
    median_ms: float
    p90_ms: float
    std_ms: float
    repeats: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> "TimingStats":
        ordered = sorted(samples_ms)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]  # nearest-rank
        std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
        return cls(statistics.fmean(ordered), statistics.median(ordered), p90, std, len(ordered))


def time_module(module, x, device: str = "cpu", threads: int | None = None, warmup: int = 5,
                repeats: int = 30) -> TimingStats:
    """Latency statistics (ms) of `module(x)`; `module` and `x` already on `device`."""
    import torch

    module.eval()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            samples = _time_cuda(module, x, repeats) if device.startswith("cuda") else _time_cpu(module, x, repeats)
    finally:
        torch.set_num_threads(previous)
    return TimingStats.of(samples)


def _time_cpu(module, x, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        module(x)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def _time_cuda(module, x, repeats: int) -> list[float]:
    import torch

    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    torch.cuda.synchronize()
    for start, end in pairs:
        start.record()
        module(x)
        end.record()
    torch.cuda.synchronize()  # every event has completed: elapsed_time is valid
    return [start.elapsed_time(end) for start, end in pairs]  # ms
