"""Candidate ranks per layer (docs/method.md section 2).

Two modes:
- constant step (the paper): multiples of a step, plus the layer's `max_rank`;
- latency-sensitive (ours): from a measured rank -> latency curve, keep a rank only where it is the
  largest rank at its latency step; a rank that costs as much as a larger one wastes accuracy.
In both, the largest candidate is `max_rank`, which stands for "not decomposed": exact factors in
the supernet, the original layer (LUT rank 0) in cost tables and exported models.
"""
from __future__ import annotations

from dataclasses import dataclass

from .decomposition import LayerSpec
from .errors import BadInputError


@dataclass(frozen=True)
class RankSpace:
    """Ascending candidate ranks per layer name; each tuple ends with that layer's max_rank."""

    candidates: dict[str, tuple[int, ...]]

    def __post_init__(self):
        for name, cands in self.candidates.items():
            if not cands or list(cands) != sorted(set(cands)) or cands[0] < 1:
                raise BadInputError(f"layer {name!r}: candidate ranks {cands!r} must be distinct, ascending and >= 1")

    def size(self) -> float:
        """Number of architectures in the space (product of candidate counts)."""
        n = 1.0
        for c in self.candidates.values():
            n *= len(c)
        return n


def constant_step_candidates(spec: LayerSpec, step: int, drop_dominated: bool = False) -> tuple[int, ...]:
    """Multiples of `step` below `spec.max_rank`, then `max_rank` itself.

    `drop_dominated`: leave out ranks whose factors cost at least as much as the whole layer (FLOPs
    when the spec has its input size, else parameters): keeping the layer whole is then as cheap and
    exact. A wide Tucker-2 rank does this (ResNet-20's layer3.0.conv1 at 44-60 of 64).
    """
    if step < 1:
        raise BadInputError(f"rank step {step} must be >= 1")
    ranks = tuple(range(step, spec.max_rank, step))
    if drop_dominated:
        whole = factored_cost(spec, spec.max_rank)
        ranks = tuple(r for r in ranks if factored_cost(spec, r) < whole)
    return ranks + (spec.max_rank,)


def factored_cost(spec: LayerSpec, rank: int) -> float:
    """FLOPs of the layer at `rank` (max_rank: the original) if its input size is known, else parameters."""
    if spec.op == "linear" or spec.input_hw is not None:
        from .hardware_loss import layer_flops

        return float(layer_flops(spec, rank))
    k = spec.kernel_size[0] * spec.kernel_size[1]
    if rank >= spec.max_rank:
        return float(spec.in_channels * spec.out_channels * k)
    r_in, r_out = spec.rank_pair(rank)
    if spec.kind == "tucker2":
        return float(spec.in_channels * r_in + r_in * r_out * k + r_out * spec.out_channels)
    return float(rank * (spec.in_channels + spec.out_channels))


def latency_sensitive_candidates(spec: LayerSpec, curve: dict[int, float], rel_tol: float = 0.02,
                                 max_candidates: int | None = None) -> tuple[int, ...]:
    """Ranks on the lower staircase of a measured latency curve.

    `curve` maps rank -> latency, with rank 0 the original (undecomposed) layer; it must hold rank 0
    and at least one rank in [1, max_rank). `max_rank` always stays and costs `curve[0]`. Walking
    from the largest rank down, a rank is kept only when it is faster than every larger candidate by
    more than `rel_tol` (relative): ranks in one latency step collapse onto the largest, and ranks
    slower than not decomposing at all are dropped. `max_candidates` thins the result evenly,
    always keeping the smallest and `max_rank`.
    """
    if 0 not in curve:
        raise BadInputError(f"layer {spec.name!r}: the latency curve needs rank 0 (the original layer)")
    ranks = sorted(r for r in curve if 0 < r < spec.max_rank)
    if not ranks:
        raise BadInputError(f"layer {spec.name!r}: the latency curve has no rank in [1, {spec.max_rank - 1}]")
    kept = [spec.max_rank]
    best = curve[0]
    for r in reversed(ranks):
        if curve[r] < best * (1.0 - rel_tol):
            kept.append(r)
            best = curve[r]
    kept.reverse()
    if max_candidates is not None and len(kept) > max_candidates >= 2:
        inner = kept[:-1]
        n = max_candidates - 1
        picks = sorted({inner[round(i * (len(inner) - 1) / max(n - 1, 1))] for i in range(n)})
        kept = picks + [spec.max_rank]
    return tuple(kept)


def build_rank_space(specs: dict[str, LayerSpec], mode: str = "step", step: int = 8,
                     curves: dict[str, dict[int, float]] | None = None, rel_tol: float = 0.02,
                     max_candidates: int | None = None, drop_dominated: bool = True) -> RankSpace:
    """A `RankSpace` over `specs`: mode "step" (constant step) or "latency" (from `curves`).

    Step mode drops ranks that cost as much as the whole layer (`drop_dominated`, see
    `constant_step_candidates`); latency mode drops them by construction (slower than the original).
    """
    if mode == "step":
        return RankSpace({n: constant_step_candidates(s, step, drop_dominated) for n, s in specs.items()})
    if mode == "latency":
        if curves is None:
            raise BadInputError("rank space mode 'latency' needs a latency curve per layer (curves=...)")
        missing = [n for n in specs if n not in curves]
        if missing:
            raise BadInputError(f"no latency curve for layers {missing[:5]}; profile them first or use mode 'step'")
        return RankSpace({n: latency_sensitive_candidates(s, curves[n], rel_tol, max_candidates)
                          for n, s in specs.items()})
    raise BadInputError(f"rank space mode {mode!r} unknown; use 'step' or 'latency'")
