"""The demo's own table for BENCHMARKS.md, from a finished run's report.json.

    .venv/bin/python -m pipelines.imagenet_resnet18 --preset demo
    .venv/bin/python -m benchmarks.demo_table runs/imagenet_resnet18-demo/report.json
"""
from __future__ import annotations

import json
import sys


def table(report: dict) -> str:
    hw = report["hardware"]
    head = ["config", "top-1", "FLOPs reduction", "FLOPs-ideal speedup"]
    for h in hw:
        head += [f"{h} speedup (measured)", f"{h} share of ideal", f"{h} LUT error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    b = report["baseline"]
    lines.append("| original | " + f"{b['top1']:.3f} | - | 1.00x | "
                 + " | ".join(f"{b['latency_ms'][h]:.3f} ms | - | -" for h in hw) + " |")
    for r in report["results"]:
        ideal = r["ideal_speedup"]
        cells = [r.get("config_id", r["hardware"]), f"{r['top1']:.3f}", f"{100 * r['flops_reduction']:.1f}%",
                 f"{ideal:.2f}x"]
        for h in hw:
            speed, err = r["speedup"][h], (r.get("lut_error") or {}).get(h)
            cells += [f"{speed:.2f}x", f"{speed / ideal:.2f}", "-" if err is None else f"{100 * err:+.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
