"""Seconds per simulated layer: the lean ZigZag backend against ZigZag's stock API, side by side.

    .venv/bin/python benchmarks/bench_zigzag.py [--accelerator tpu_like] [--smoke-test]

Both run in this process on the same layers after a warm-up (imports and yaml parsing excluded);
wall and CPU seconds are both shown, since on a shared machine the wall figure includes waiting.
The lean cache is cleared before each layer, so every lean figure is a real simulation. The last
column says whether the two found the same (cycles, energy).
"""
from __future__ import annotations

import argparse
import time

from benchmarks.zigzag_stock import stock_simulate
from hw_profiles import zigzag_backend as zz
from hw_profiles.zigzag_backend import ConvWorkload

LAYERS = {
    "3x3 16->16 @32x32": ConvWorkload(16, 16, (3, 3), (1, 1), (1, 1), (32, 32)),
    "3x3 256->256 @14x14": ConvWorkload(256, 256, (3, 3), (1, 1), (1, 1), (14, 14)),
    "1x1 256->32 @8x8": ConvWorkload(256, 32, in_hw=(8, 8)),
}


def measure(workload: ConvWorkload, accelerator: str) -> dict[str, object]:
    zz.clear_cache()
    wall, cpu = time.perf_counter(), time.process_time()
    lean = zz.simulate([workload], accelerator)
    lean_s, lean_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    stock = stock_simulate(workload, accelerator)
    stock_s, stock_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"lean_s": lean_s, "stock_s": stock_s, "lean_cpu": lean_cpu, "stock_cpu": stock_cpu,
            "lean": lean, "stock": stock}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="tpu_like", choices=zz.list_accelerators())
    parser.add_argument("--smoke-test", action="store_true", help="one layer only")
    args = parser.parse_args()

    layers = dict(list(LAYERS.items())[:1]) if args.smoke_test else LAYERS
    measure(ConvWorkload(64, 64, in_hw=(4, 4)), args.accelerator)  # warm-up: imports, yaml parsing

    print(f"ZigZag on {args.accelerator}: seconds per simulated layer")
    print("(wall seconds, and CPU seconds of this process: on a shared machine the CPU figure is the fair one)")
    print(f"{'layer':<22}{'lean s':>8}{'stock s':>9}{'lean cpu':>10}{'stock cpu':>11}{'stock/lean cpu':>16}"
          f"  {'cycles':>8}  same result")
    for name, workload in layers.items():
        r = measure(workload, args.accelerator)
        same = "yes" if r["lean"] == r["stock"] else f"no (stock {r['stock'].cycles:.0f})"
        print(f"{name:<22}{r['lean_s']:>8.2f}{r['stock_s']:>9.2f}{r['lean_cpu']:>10.2f}{r['stock_cpu']:>11.2f}"
              f"{r['stock_cpu'] / r['lean_cpu']:>15.1f}x  {r['lean'].cycles:>8.0f}  {same}")


if __name__ == "__main__":
    main()
