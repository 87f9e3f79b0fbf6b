"""What to paste into a bug report: versions, CUDA devices, this node's Ray resources, the hardware
profiles and (given a cluster address) the cluster's nodes. `gather_env` returns plain data; printing
lives in `python -m pipelines.env`.

Versions are read from the installed distributions' metadata, not by importing them, so the report
is quick and never starts Ray: Ray is imported only when `address` is given.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from haloc.errors import BadInputError

# report key -> distribution name on PyPI
PACKAGES = {
    "haloc-ray": "haloc-ray",
    "torch": "torch",
    "torchvision": "torchvision",
    "ray": "ray",
    "pyarrow": "pyarrow",
    "onnxruntime": "onnxruntime",
    "zigzag": "zigzag-dse",
}


def package_versions() -> dict[str, str | None]:
    """{"python": "3.11.7", "torch": "2.14.1", ...}; None for a package that is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def cuda_devices() -> dict:
    """torch's view of CUDA: {"available", "cuda_version", "devices": [{index, name, capability, memory_gib}]}."""
    try:
        import torch
    except ImportError:
        return {"available": False, "cuda_version": None, "devices": [], "note": "torch is not installed"}
    available = torch.cuda.is_available()
    devices = []
    for i in range(torch.cuda.device_count() if available else 0):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                        "memory_gib": round(props.total_memory / 2**30, 1)})
    return {"available": available, "cuda_version": torch.version.cuda, "devices": devices}


def node_resources() -> dict:
    """This node's detected Ray custom resources and whether it looks like a Jetson."""
    from workers.detect import detect_resources, is_jetson

    return {"resources": detect_resources(), "jetson": is_jetson()}


def hardware_profiles(extra_dirs=()) -> list[dict]:
    """One row per profile; a profile that fails to load is listed with its error, not raised."""
    from hw_profiles.profile import get_profile, list_profiles

    rows = []
    for name in list_profiles(extra_dirs):
        try:
            p = get_profile(name, extra_dirs)
        except BadInputError as e:
            rows.append({"name": name, "error": str(e)})
            continue
        rows.append({"name": p.name, "backend": p.backend, "resource": p.ray_resource, "device": p.device,
                     "batch_size": p.batch_size, "dtype": p.dtype})
    return rows


def cluster_nodes(address: str) -> dict:
    """Connect to the cluster at `address` and list every node (dead ones too) with its resources."""
    from .cluster import check_reachable, connect, list_nodes

    check_reachable(address)
    connect(address)
    nodes = []
    for n in list_nodes(alive_only=False):
        nodes.append({"node_id": n.node_id, "address": n.address, "alive": n.alive,
                      "cpus": n.resources.get("CPU", 0), "gpus": n.resources.get("GPU", 0),
                      "custom_resources": n.custom_resources})
    return {"address": address, "nodes": nodes}


def gather_env(address: str | None = None, extra_profile_dirs=()) -> dict:
    """The whole report as plain data (JSON-serialisable). `cluster` is None without `address`."""
    return {
        "versions": package_versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "executable": sys.executable},
        "cuda": cuda_devices(),
        "node": node_resources(),
        "profiles": hardware_profiles(extra_profile_dirs),
        "cluster": cluster_nodes(address) if address else None,
    }
