"""Timing with torch: blocks of runs through `torch.utils.benchmark`, their spread, and a reference
workload that tells how fast the machine is right now.

Protocol of one measurement: `warmup` untimed runs under `torch.inference_mode`, then blocks of runs
(`torch.utils.benchmark.Timer.blocked_autorange`: the block size keeps the timer's own overhead
small; CUDA is synchronised by the Timer), at least `min_blocks` of them. The statistics are over
the blocks' per-run times: median, p10, p90 (spread = (p90 - p10) / median), mean, std.

A shared machine changes speed while it measures: another process takes a core for a while, the
clock throttles. `ReferenceClock` times a fixed workload and keeps the fastest time it has ever
seen; its slowdown (now / fastest) put beside a layer's time says whether the layer was measured on
a quiet machine, and `time_interleaved` measures modules and the reference in turns (A R B R A R B
...), so that each block of a module has the machine speed of its own moment.
"""
from __future__ import annotations

import logging
import math
import statistics
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class TimingStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int  # blocks timed
    runs_per_block: int = 1

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: 0 for a deterministic simulator."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    @classmethod
    def of(cls, samples_ms: list[float], runs_per_block: int = 1) -> TimingStats:
        ordered = sorted(samples_ms)
        std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
        return cls(statistics.median(ordered), quantile(ordered, 0.1), quantile(ordered, 0.9),
                   statistics.fmean(ordered), std, len(ordered), runs_per_block)

    @classmethod
    def exact(cls, ms: float) -> TimingStats:
        """One deterministic value (a simulator's)."""
        return cls(ms, ms, ms, ms, 0.0, 1, 1)


def quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default)."""
    if not ordered:
        raise ValueError("quantile of no values")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def _benchmark():
    # torch.utils.benchmark imports torch.utils.cpp_extension, which warns about a missing CUDA
    # toolkit on machines without one: not the project's output.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


class _Runner:
    """One module on one input, timed by `torch.utils.benchmark.Timer` in blocks of `number` runs
    (ms per run): a block lasts about `block_s`, long enough that the timer's own microseconds do not
    count, short enough that a measurement of `repeats` blocks stays quick."""

    def __init__(self, module, x, threads: int | None, block_s: float):
        self.timer = _benchmark().Timer(stmt="module(x)", globals={"module": module, "x": x},
                                        num_threads=threads or _torch_threads())
        single = statistics.median(self.timer.timeit(1).times[0] for _ in range(3))  # seconds
        self.number = max(1, round(block_s / max(single, 1e-9)))
        self.block_s = self.number * single

    def block(self) -> float:
        return self.timer.timeit(self.number).times[0] * 1e3


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def time_module(module, x, device: str = "cpu", threads: int | None = None, warmup: int = 5,
                repeats: int = 30, min_run_time_s: float = 0.1) -> TimingStats:
    """Latency statistics (ms per run) of `module(x)`: at least `repeats` blocks and at least
    `min_run_time_s` of timing. `module` and `x` are on `device` already (the Timer synchronises
    CUDA); `threads` fixes torch's CPU threads while timing and is restored afterwards."""
    import torch

    module.eval()
    with torch.inference_mode(), _threads(threads):
        for _ in range(warmup):
            module(x)
        runner = _Runner(module, x, threads, block_s=0.001)
        blocks = max(repeats, math.ceil(min_run_time_s / max(runner.block_s, 1e-9)))
        samples = [runner.block() for _ in range(blocks)]
    return TimingStats.of(samples, runner.number)


@contextmanager
def _threads(threads: int | None):
    """torch's CPU threads fixed to `threads` for the block (the warm-ups run as they are timed)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ReferenceClock:
    """A fixed workload on the profile's device: how fast is the machine right now?

    `slowdown(ms)` is a block time of the reference against the fastest block seen so far (>= 1; 1.0
    on a quiet machine). The workload (a 3x3 conv, 64 channels, 16x16, batch 1: a fraction of a
    millisecond on one CPU core, timed in blocks of about 5 ms like a re-measurement's) is small
    enough to run beside every measurement.
    """

    def __init__(self, device: str = "cpu", threads: int | None = None, dtype=None, warmup: int = 5):
        import torch

        torch.manual_seed(0)
        module = torch.nn.Conv2d(64, 64, 3, padding=1).to(device, dtype or torch.float32).eval()
        x = torch.randn(1, 64, 16, 16, device=device, dtype=dtype or torch.float32)
        with torch.inference_mode(), _threads(threads):
            for _ in range(warmup):
                module(x)
            self._runner = _Runner(module, x, threads, block_s=0.005)  # as a re-measurement's blocks
            self.fastest_ms = min(self._runner.block() for _ in range(5))

    def block(self) -> float:
        """One block of the reference (ms per run); updates the fastest seen."""
        import torch

        with torch.inference_mode():
            ms = self._runner.block()
        self.fastest_ms = min(self.fastest_ms, ms)
        return ms

    def slowdown(self, ms: float | None = None) -> float:
        """`ms` (default: a new block) against the fastest reference block seen."""
        ms = self.block() if ms is None else ms
        return ms / self.fastest_ms


def time_interleaved(items: list[tuple[object, object]], rounds: int, threads: int | None = None,
                     warmup: int = 5, clock: ReferenceClock | None = None, block_s: float = 0.01
                     ) -> tuple[list[list[float]], list[float]]:
    """Time several (module, input) pairs in turns: round r times one block of each, in order, so
    that all of them see the machine of the same moments (A B A B ..., with `clock`: A R B R ...).

    Returns (per item, its block times in ms per run, one per round; per round, the reference's
    slowdown, the median over its blocks in that round, or [] without a clock).
    """
    import torch

    runners = []
    with torch.inference_mode(), _threads(threads):
        for module, x in items:
            module.eval()
            for _ in range(warmup):
                module(x)
            runners.append(_Runner(module, x, threads, block_s))
        samples: list[list[float]] = [[] for _ in items]
        slowdowns: list[float] = []
        for _ in range(rounds):
            round_slowdowns = []
            for k, runner in enumerate(runners):
                if clock is not None:
                    round_slowdowns.append(clock.slowdown())
                samples[k].append(runner.block())
            if round_slowdowns:
                slowdowns.append(statistics.median(round_slowdowns))
    return samples, slowdowns
