"""A new user's first runs: each README command from an empty store, several times, its exit code
and wall time, as a user would meet them.

    python benchmarks/first_run.py                          # every command, 3 attempts each (an hour or more)
    python benchmarks/first_run.py --only demo --attempts 1
    python benchmarks/first_run.py --list

Each attempt runs in a new empty folder (its own `./runs` store, its own data cache), so nothing an
earlier attempt measured or trained is reused; the `compress` case first writes a small ImageFolder
(PNG files, 3 classes) of its own, and ZigZag's result cache starts empty too. The result file
records per attempt: the command, the exit code, the seconds, the machine's load before it started,
and the run's last lines (its verdicts). A quiet machine is the condition these figures are for: the
load before each attempt is in the file, and an attempt that started on a busy machine says so.
Results: benchmarks/results/first_run.json (BENCHMARKS.md, "first runs").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from benchmarks.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).parent / "results" / "first_run.json"
PY = sys.executable
HALOC = str(Path(PY).with_name("haloc"))
BUSY_LOAD = 0.5  # a 1-minute load average above this before an attempt: not a quiet figure

COMMANDS = {
    "demo": [PY, "-m", "pipelines.imagenet_resnet18", "--preset", "demo"],
    "cifar_resnet20": [PY, "-m", "pipelines.cifar_resnet20", "--preset", "demo"],
    "cifar_vgg16": [PY, "-m", "pipelines.cifar_vgg16", "--preset", "demo"],
    "compress": [HALOC, "run", "compress", "--preset", "quick", "--model", "torchvision:resnet18",
                 "--data", "{imagefolder}"],
}


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 24, side: int = 32) -> Path:
    """train/ and val/ with a folder per class of PNG images whose class is in their colour and
    texture (learnable, so the original trains to a real baseline)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((side, side, 3), np.float32)
                base[..., c % 3] = 180
                stripes = (np.arange(side)[:, None] // (2 + c) % 2) * 60
                img = np.clip(base + stripes[..., None] + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def settle(limit_s: float) -> float:
    """Wait until the 1-minute load average is under BUSY_LOAD (the attempt before's own processes
    have left it), at most `limit_s`; returns the seconds waited. Without it each attempt's "load
    before" would be the previous attempt's tail, not a neighbour's work."""
    t0 = time.perf_counter()
    while os.getloadavg()[0] > BUSY_LOAD and time.perf_counter() - t0 < limit_s:
        time.sleep(5)
    return time.perf_counter() - t0


def attempt(name: str, timeout: float, settle_s: float = 0.0) -> dict:
    waited = settle(settle_s) if settle_s > 0 else 0.0
    work = Path(tempfile.mkdtemp(prefix=f"first-run-{name}-"))
    cmd = [a.replace("{imagefolder}", str(work / "images")) for a in COMMANDS[name]]
    if name == "compress":
        write_imagefolder(work / "images")
    # Every cache a new user starts without: the data cache and ZigZag's result cache both empty.
    env = dict(os.environ, HALOC_DATA_CACHE=str(work / "cache"), HALOC_ZIGZAG_CACHE=str(work / "zigzag.sqlite"),
               PYTHONPATH=str(ROOT))
    load = os.getloadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes)
                              else (e.stderr or ""))
    seconds = time.perf_counter() - t0
    tail = [line for line in err.splitlines() if line.strip()][-8:]
    shutil.rmtree(work, ignore_errors=True)
    return {"case": name, "command": " ".join([Path(cmd[0]).name, *cmd[1:]]), "exit": rc,
            "seconds": round(seconds, 1), "load_before": [round(x, 2) for x in load],
            "settled_s": round(waited, 1), "quiet": load[0] <= BUSY_LOAD, "last_lines": tail}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(COMMANDS), help="cases to run (default: all)")
    p.add_argument("--attempts", type=int, default=3, help="attempts per case, each from an empty store (default: 3)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds an attempt may take (default: 1800)")
    p.add_argument("--json", type=Path, default=RESULT, help=f"result file (default: {RESULT.relative_to(ROOT)})")
    p.add_argument("--append", action="store_true", help="add these attempts to the result file's")
    p.add_argument("--settle", type=float, default=150,
                   help="seconds to wait at most, before each attempt, "
                        f"for the 1-minute load to fall under {BUSY_LOAD} "
                        "(default: 150; 0: do not wait)")
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, cmd in COMMANDS.items():
            print(f"{name}: {' '.join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd))}")
        return 0
    started = time.time()
    runs = json.loads(args.json.read_text())["attempts"] if args.append and args.json.exists() else []
    for name in args.only or list(COMMANDS):
        for i in range(args.attempts):
            rec = attempt(name, args.timeout, args.settle)
            runs.append(rec)
            quiet = "" if rec["quiet"] else f" (NOT quiet: load {rec['load_before'][0]} before)"
            print(f"{name} attempt {i + 1}: exit {rec['exit']} in {rec['seconds']:.0f} s{quiet}", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"attempts": runs, "provenance": provenance(started)}, indent=1) + "\n")
    failed = [r for r in runs if r["exit"] != 0]
    print(f"{len(runs) - len(failed)} of {len(runs)} attempt(s) exited 0")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
