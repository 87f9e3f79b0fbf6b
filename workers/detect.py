"""Which hardware this node offers, as Ray custom resources for `ray start --resources`.

    python -m workers.detect                 # {"hw_cpu": 1, "hw_asic": 1}
    python -m workers.detect --format flag   # --resources='{"hw_cpu": 1, "hw_asic": 1}'
    ray start --address=HEAD:6379 --resources="$(python -m workers.detect)"

Each timing resource is offered once per node (amount 1) and a timing actor takes all of it, so two
timing actors never share a node. `hw_asic` (the ZigZag simulator, no timing noise) is offered once
too; the orchestrator splits it between several simulator actors.

A host can narrow what it offers with `HALOC_OFFER_ONLY` (comma-separated names, e.g. `hw_cpu` on a
host kept for timing, nothing at all when empty): only detected resources among those names are
printed, and a name that detection did not find is reported on stderr, never offered.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

OFFER_ONLY_ENV = "HALOC_OFFER_ONLY"
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def is_jetson(tegra_release: Path = TEGRA_RELEASE, model_file: Path = DEVICE_TREE_MODEL) -> bool:
    """A Jetson board: L4T's release file, or a device-tree model naming Jetson / Tegra."""
    if tegra_release.exists():
        return True
    try:
        model = model_file.read_bytes().decode(errors="ignore").lower()
    except OSError:
        return False
    return "jetson" in model or "tegra" in model


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def zigzag_available() -> bool:
    return importlib.util.find_spec("zigzag") is not None


def detect_resources(jetson: bool | None = None, cuda: bool | None = None, zigzag: bool | None = None) -> dict:
    """{resource: amount} this node offers; arguments override detection (for tests and odd hosts)."""
    jetson = is_jetson() if jetson is None else jetson
    cuda = cuda_available() if cuda is None else cuda
    zigzag = zigzag_available() if zigzag is None else zigzag
    resources = {"hw_cpu": 1}
    if cuda and jetson:
        resources["hw_jetson"] = 1
    elif cuda:
        resources["hw_cuda"] = 1
    if zigzag:
        resources["hw_asic"] = 1
    return resources


def offer_only(resources: dict, names: str | None) -> tuple[dict, list[str]]:
    """(the resources among `names`, the names asked for but not detected); `names` None: all of them."""
    if names is None:
        return dict(resources), []
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    return {k: v for k, v in resources.items() if k in wanted}, [n for n in wanted if n not in resources]


def format_resources(resources: dict, fmt: str) -> str:
    text = json.dumps(resources, sort_keys=True)
    return f"--resources='{text}'" if fmt == "flag" else text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("json", "flag"), default="json",
                        help="json: the resources dict; flag: a ray start --resources='...' argument")
    args = parser.parse_args(argv)
    detected = detect_resources()
    resources, missing = offer_only(detected, os.environ.get(OFFER_ONLY_ENV))
    if missing:
        print(f"workers.detect: {OFFER_ONLY_ENV} names {missing}, which this node does not have; not offered "
              f"(detected: {sorted(detected)})", file=sys.stderr)
    print(format_resources(resources, args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
