from dataclasses import replace

import pytest
import torch

from hw_profiles.calibration import fit_calibration
from hw_profiles.measure import measure_rows
from hw_profiles.profile import get_profile
from hw_profiles.signature import LayerSignature, zigzag_workloads
from hw_profiles.timing import TimingStats, time_module


def test_stats_of_samples():
    s = TimingStats.of([float(v) for v in range(10, 0, -1)])
    assert (s.median_ms, s.mean_ms, s.repeats) == (5.5, 5.5, 10)
    assert (s.p10_ms, s.p90_ms) == pytest.approx((1.9, 9.1))  # linear interpolation, as numpy's default
    assert s.std_ms == pytest.approx(2.8723, abs=1e-3)
    assert s.spread == pytest.approx((9.1 - 1.9) / 5.5)
    assert TimingStats.exact(2.0).spread == 0.0


def test_cpu_timing_fixes_threads_and_restores_them():
    before = torch.get_num_threads()
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))
            return x * 2

    s = time_module(Probe(), torch.ones(4), threads=1, warmup=2, repeats=3, min_run_time_s=0.0)
    assert s.repeats >= 3 and len(seen) >= 5 and set(seen) == {(1, True)}  # warm-ups and timed blocks alike
    assert s.runs_per_block >= 1 and s.p10_ms <= s.median_ms <= s.p90_ms
    assert torch.get_num_threads() == before


def test_torch_rows_on_cpu():
    profile = replace(get_profile("cpu"), warmup=1, repeats=3, threads=1)
    sig = LayerSignature("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), input_hw=(8, 8))
    rows = measure_rows(profile, [(sig, 0), (sig, 4)])
    assert [r.rank for r in rows] == [0, 4] and all(r.latency_median_ms > 0 and r.repeats >= 3 for r in rows)
    assert all(r.energy_pj is None and r.hardware == "cpu" and '"torch"' in r.software for r in rows)
    assert all(r.latency_p10_ms <= r.latency_median_ms <= r.latency_p90_ms and r.slowdown >= 1.0 for r in rows)


@pytest.mark.slow
def test_zigzag_rows_step_with_the_array_width():
    """Measured on the development machines: on the 32x32 array, cost jumps when a rank crosses a multiple of 32, and a
    16-channel layer only gets slower when decomposed."""
    from hw_profiles.zigzag_backend import simulate

    asic = get_profile("asic")
    wide = LayerSignature("conv2d", 256, 256, (3, 3), (1, 1), (1, 1), input_hw=(8, 8), dtype="int8")
    ms = {r.rank: r for r in measure_rows(asic, [(wide, r) for r in (31, 32, 33)])}
    step_up = ms[33].latency_median_ms - ms[32].latency_median_ms  # 33 needs a second pass of the 32-wide array
    assert step_up > 5 * (ms[32].latency_median_ms - ms[31].latency_median_ms)
    assert all(r.energy_pj > 0 and r.latency_std_ms == 0 for r in ms.values())
    cycles = simulate(zigzag_workloads(wide, 32), "tpu_like").cycles
    assert ms[32].latency_median_ms == pytest.approx(cycles / asic.clock_hz * 1e3)  # cycles / clock_hz, in ms
    narrow = LayerSignature("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), input_hw=(32, 32), dtype="int8")
    small = {r.rank: r.latency_median_ms for r in measure_rows(asic, [(narrow, r) for r in (0, 16)])}
    assert small[16] > small[0]


def test_calibration_fit_recovers_a_line():
    sums = [1.0, 2.0, 3.0, 4.0, 5.0]
    cal = fit_calibration("cpu", sums, [0.5 + 2 * s for s in sums])
    assert cal.a_ms == pytest.approx(0.5) and cal.b == pytest.approx(2.0)
    assert cal.within_10pct == 1.0 and cal.predict(10.0) == pytest.approx(20.5)


def test_calibration_fit_ignores_an_outlier_and_never_has_a_negative_slope():
    from hw_profiles.calibration import fit_calibration

    xs = [10.0, 12.0, 14.0, 16.0, 18.0]
    ys = [2.0 + 1.5 * x for x in xs]
    ys[2] = 400.0  # one timing taken while the machine was busy
    cal = fit_calibration("cpu", xs, ys)
    assert cal.b == pytest.approx(1.5) and cal.a_ms == pytest.approx(2.0)
    # the points seen here on a loaded machine: least squares gave b = -6; the fit falls back to a scale
    noisy = fit_calibration("cpu", [141.1, 127.5, 144.3, 121.5], [119.2, 51.8, 471.6, 640.4])
    assert noisy.b > 0 and noisy.a_ms == 0.0
