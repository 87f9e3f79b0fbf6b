"""The numbers and words the report's terminal table, its verdict lines and its HTML page share: one
formatting of a figure, one name of a config, one top-1 noise, one verdict text."""
from __future__ import annotations

import math

NOISE_SE = 2.0  # "beyond noise": a top-1 difference over 2 standard errors (~95% for a normal difference)


def finite(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def fmt(x, spec: str = ".3f", none: str = "-") -> str:
    return none if finite(x) is None else format(x, spec)


def label_of(r: dict) -> str:
    return r.get("config_id") or r["hardware"]


def positive_count(n):
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and n > 0 else None


def delta_text(change: dict | None, unit: str = " pts") -> str:
    """"+1.2 +-3.0 pts": a result's top-1 change against the original, in points, with its noise."""
    change = change or {}
    if finite(change.get("delta")) is None:
        return "-"
    noise = f" +-{100 * change['noise']:.1f}" if finite(change.get("noise")) is not None else " (noise unknown)"
    return f"{100 * change['delta']:+.1f}{noise}{unit}"


def top1_se(p, n) -> float | None:
    """The binomial standard error of a top-1 `p` measured on `n` images, sqrt(p(1-p)/n), with p
    taken as (k+2)/(n+4) (Agresti-Coull): a top-1 of exactly 1.0 or 0.0 on a small set is not exact,
    and the plain formula would say its noise is 0. None: n unknown."""
    p, n = finite(p), positive_count(n)
    if p is None or n is None:
        return None
    q = (p * n + 2) / (n + 4)
    return math.sqrt(q * (1 - q) / (n + 4))


def verdict_text(result: dict) -> str:
    """"met on cpu" / "met on cpu, uncertain (within noise)" / "MISSED on cpu (1.04 of the original
    against 0.9)" per target, measured."""
    parts = []
    for hw, check in result.get("budget_check", {}).items():
        noise = ", within noise" if check.get("within_noise") else ""
        if check.get("met"):  # met within noise: a rerun may miss it
            parts.append(f"met on {hw}" + (", uncertain (within noise)" if noise else ""))
        else:
            parts.append(f"MISSED on {hw} ({check.get('ratio', float('nan')):.3f} of the original against "
                         f"{result['budget']:g}{noise})")
    return "; ".join(parts) or "not measured"
