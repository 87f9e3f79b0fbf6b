"""End-to-end calibration of a LUT: measured ~ a + b * (sum of the layers' LUT latencies).

`a` absorbs what the LUT does not see (stem, pooling, activations, framework overhead), `b` the
systematic gap between isolated and in-model layer timings. Stored as JSON beside the LUT:
`<hardware>.calibration.json`. The reported error is leave-one-out, so it is not flattered by the fit,
and each point keeps its own (`loo_error`), so the configurations the LUT mispredicts can be found.
The gate counts each point's `gate_error`: its leave-one-out error, except at the two ends of the
LUT-sum range (the original and the cheapest model the LUT prices, which every calibration measures):
every model a budget can select lies between them, so a prediction there is never the extrapolation
that leaving an end out would test, and an end is judged by the fit's own error at it (`judged`:
"range end, in the fit"; with at least 3 points left to hold out). Measured on the cifar_resnet20
demo (benchmarks/results/first_run.json): leaving out the cheapest model, where the LUT is least
linear, was the one or two misses that failed a gate whose interior points all held.
`gate` is the share within `tolerance` (the profile's `calibration_tolerance`, 10% by default) the
hardware profile asks for; `passed` says whether it was reached. `within_10pct` is always the share
within 10%, whatever the tolerance, so that calibrations of different profiles compare.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field

from haloc.errors import BadInputError

from .signature import profiling_ranks


@dataclass(frozen=True)
class Calibration:
    hardware: str
    a_ms: float
    b: float
    samples: int
    within_10pct: float  # share of the gate's errors (`gate_error`) within 10% of the measurement
    median_rel_error: float  # leave-one-out, |pred - measured| / measured
    points: list = field(default_factory=list)  # [{"lut_sum_ms", "measured_ms", "loo_error", "gate_error", ...}]
    gate: float = 0.0  # the share within `tolerance` the profile asks for
    passed: bool = True  # within_tolerance >= gate
    remeasured_rows: int = 0  # LUT rows measured again to reach the gate
    rounds: int = 0  # gate rounds (re-measure, refit) that were needed
    lut_fingerprint: str = ""  # of the LUT rows this calibration was made on
    tolerance: float = 0.10  # the relative error a held-out prediction may have and count for the gate

    @property
    def tolerance_text(self) -> str:
        """The tolerance as people write it: '10%', '0.5%'."""
        return f"{self.tolerance * 100:g}%"

    @property
    def within_tolerance(self) -> float:
        """The share of the gate's errors within `tolerance`, from the points' own errors
        (within_10pct where no point kept its error)."""
        errors = [e for p in self.points if (e := gate_error(p)) is not None]
        return sum(e <= self.tolerance for e in errors) / len(errors) if errors else self.within_10pct

    @property
    def cost_span(self) -> tuple[float, float]:
        """(cheapest, dearest) measured configuration as a fraction of the original's measurement (the
        point without ranks): the cost range in which the calibration checked the LUT."""
        if not self.points:
            return (1.0, 1.0)
        measured = [p["measured_ms"] for p in self.points]
        original = self.original_ms or max(measured)
        return (min(measured) / original, max(measured) / original) if original > 0 else (1.0, 1.0)

    @property
    def original_ms(self) -> float | None:
        """The original's own measurement (the point without ranks), None when it was not measured."""
        return next((p["measured_ms"] for p in self.points if p.get("ranks") == {}), None)

    @property
    def worst_under(self) -> float:
        """The largest held-out relative error among the points the fit prices below their measurement
        (0.0 when it prices none below): how far under a measured model the LUT has been seen to aim."""
        under = [p["loo_error"] for p in self.points
                 if p.get("loo_error") is not None and p["measured_ms"] > self.predict(p["lut_sum_ms"])]
        return max(under, default=0.0)

    def predict(self, lut_sum_ms: float) -> float:
        return self.a_ms + self.b * lut_sum_ms

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        # a calibration written before the gate existed reads with its defaults; `within_tolerance`,
        # stored by a version of 2026-12-07, is derived from the points now
        return cls(**{k: v for k, v in d.items() if k != "within_tolerance"})

    def with_gate(self, gate: float, **changes) -> Calibration:
        from dataclasses import replace

        return replace(self, gate=gate, passed=self.within_tolerance >= gate - 1e-12, **changes)


HELD_OUT, RANGE_END = "held out", "range end, in the fit"
MIN_HELD_OUT = 3  # the ends are judged in the fit only while at least this many points are held out


def gate_error(point: dict) -> float | None:
    """The error the gate counts for a calibration point (its leave-one-out error for a point stored
    before `gate_error` existed)."""
    return point.get("gate_error", point.get("loo_error"))


def _range_ends(lut_sums: list[float]) -> set[int]:
    """The indices of the smallest and largest LUT sum, when enough points remain to hold out."""
    if len(lut_sums) < MIN_HELD_OUT + 2:
        return set()
    order = sorted(range(len(lut_sums)), key=lut_sums.__getitem__)
    return {order[0], order[-1]}


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Robust line y = a + b x (Theil-Sen: the median of pairwise slopes, then the median intercept).

    Timings on a busy machine have outliers that least squares follows (a negative slope was seen
    here). A slope that is not positive, or a single point, falls back to a pure scale: a = 0,
    b = median(y / x).
    """
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    if slopes:
        b = statistics.median(slopes)
        a = statistics.median(y - b * x for x, y in zip(xs, ys))
        if b > 0:
            return a, b
    return 0.0, statistics.median(y / max(x, 1e-12) for x, y in zip(xs, ys))


def fit_calibration(hardware: str, lut_sums: list[float], measured: list[float], gate: float = 0.0,
                    extra: list[dict] | None = None, tolerance: float = 0.10) -> Calibration:
    """The fit and its leave-one-out errors; `extra` adds fields to each point (e.g. the ranks); the gate
    counts the held-out predictions within `tolerance` of their measurement."""
    if len(lut_sums) != len(measured) or not lut_sums:
        raise BadInputError(f"calibration of {hardware!r} needs equal, non-empty lists of LUT sums and "
                            f"measurements, got {len(lut_sums)} and {len(measured)}")
    errors = []
    for i in range(len(lut_sums)):
        rest_x, rest_y = lut_sums[:i] + lut_sums[i + 1:], measured[:i] + measured[i + 1:]
        a, b = _fit(rest_x, rest_y) if rest_x else (0.0, 1.0)
        errors.append(abs(a + b * lut_sums[i] - measured[i]) / measured[i])
    a, b = _fit(lut_sums, measured)
    ends = _range_ends(lut_sums)
    points = []
    for i, (x, y, e) in enumerate(zip(lut_sums, measured, errors)):
        in_fit = abs(a + b * x - y) / y
        points.append({"lut_sum_ms": x, "measured_ms": y, "loo_error": e, "fit_error": in_fit,
                       "gate_error": in_fit if i in ends else e, "judged": RANGE_END if i in ends else HELD_OUT,
                       **((extra or [{}] * len(lut_sums))[i])})
    share = sum(p["gate_error"] <= 0.10 for p in points) / len(points)
    return Calibration(hardware, a, b, len(lut_sums), share, statistics.median(errors), points,
                       tolerance=tolerance).with_gate(gate)


def random_configs(specs: dict, samples: int, seed: int = 0, keep_share: float = 0.2,
                   rank_step: int | None = None) -> list[dict]:
    """Random {layer: rank} configs spread over the whole cost range a search picks from.

    Config i draws a level u in [0, 1] (stratified: one per i-th share of the range, shuffled), and
    each layer a rank near u of the way up its candidate ranks (plus noise), kept whole with
    probability `keep_share` x u: at u near 0 every layer is near its smallest rank (the tight
    models a low budget selects), at u near 1 most layers are whole. Drawing each layer's rank
    independently instead puts nearly every config near the middle of the range (measured: none
    below 0.38 of the original on ResNet-20), so the LUT would be checked where no budget is set.
    Ranks come from 1..max_rank-1 (a rank at max_rank costs the original layer anyway), or, with
    `rank_step`, from the profiling grid: the ranks a search picks from, whose layer shapes the
    profiling stage has already simulated (ZigZag's disk cache then serves them)."""
    rng = random.Random(seed)
    levels = [(i + rng.random()) / samples for i in range(samples)]
    rng.shuffle(levels)
    configs = []
    for u in levels:
        config = {}
        for n, s in specs.items():
            if s.max_rank <= 1 or rng.random() < keep_share * u:
                continue
            if rank_step:
                grid = [r for r in profiling_ranks(s, rank_step) if 0 < r < s.max_rank]
            else:
                grid = list(range(1, s.max_rank))
            if not grid:
                continue
            position = min(1.0, max(0.0, u + rng.gauss(0.0, 0.15)))
            config[n] = grid[round(position * (len(grid) - 1))]
        configs.append(config)
    return configs


def cheapest_config(specs: dict, lut, batch: int) -> dict:
    """The {layer: rank} config the LUT (a LatencyTable) prices lowest: each layer at its cheapest
    measured rank, or whole where no rank beats the original layer. The floor of every budget: a
    calibration that includes it checks the LUT where the tightest budgets are set."""
    config = {}
    for n, s in specs.items():
        curve = lut.curve(s, batch)
        ranks = [r for r in curve if 0 < r < s.max_rank]
        if ranks and 0 in curve:
            best = min(ranks, key=curve.__getitem__)
            if curve[best] < curve[0]:
                config[n] = best
    return config
