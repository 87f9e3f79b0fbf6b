"""python -m pipelines.env: the bug-report environment report, run as users run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from hw_profiles.profile import get_profile, list_profiles
from workers.detect import detect_resources

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"versions", "platform", "cuda", "node", "profiles", "cluster"}
VERSION_KEYS = {"python", "haloc-ray", "torch", "torchvision", "ray", "pyarrow", "onnxruntime", "zigzag"}


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _imported_modules(importtime_stderr: str) -> set[str]:
    # `-X importtime` lines: "import time:  self [us] | cumulative | package"
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.fixture(scope="module")
def local_run():
    out = _run("-X", "importtime", "-m", "pipelines.env", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout), out.stderr


def test_report_has_every_section_and_does_not_touch_ray(local_run):
    report, stderr = local_run
    assert set(report) == KEYS
    assert report["cluster"] is None
    modules = _imported_modules(stderr)
    assert "torch" in modules  # sanity: the import log was read
    assert not {m for m in modules if m == "ray" or m.startswith("ray.")}, "the report imported Ray without --address"


def test_versions_are_the_installed_ones(local_run):
    versions = local_run[0]["versions"]
    assert set(versions) == VERSION_KEYS
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["ray"] == metadata.version("ray") and versions["torch"] == metadata.version("torch")
    assert versions["zigzag"] == metadata.version("zigzag-dse")


def test_profiles_match_hw_profiles(local_run):
    rows = {p["name"]: p for p in local_run[0]["profiles"]}
    assert sorted(rows) == list_profiles()
    for name, row in rows.items():
        p = get_profile(name)
        assert (row["backend"], row["resource"], row["batch_size"], row["dtype"], row["device"]) == \
               (p.backend, p.ray_resource, p.batch_size, p.dtype, p.device)


def test_node_resources_and_cuda_are_this_machines(local_run):
    report = local_run[0]
    assert report["node"]["resources"] == detect_resources()
    import torch

    assert report["cuda"]["available"] == torch.cuda.is_available()
    assert len(report["cuda"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_tables_show_every_profile_and_resource(local_run):
    from rich.console import Console

    from pipelines.env import print_report

    node = {"node_id": "f00d" * 14, "address": "10.0.0.7", "alive": True, "cpus": 8.0, "gpus": 1.0,
            "custom_resources": {"hw_cpu": 1.0, "hw_jetson": 1.0}}
    report = dict(local_run[0], cluster={"address": "10.0.0.1:6379", "nodes": [node]})
    console = Console(record=True, width=160)
    print_report(report, console)
    text = console.export_text()
    for name in list_profiles():
        assert get_profile(name).ray_resource in text
    assert "Hardware profiles" in text and local_run[0]["versions"]["ray"] in text
    assert "Cluster at 10.0.0.1:6379" in text and '"hw_jetson": 1.0' in text and "10.0.0.7" in text


def test_a_broken_user_profile_is_listed_with_its_error(tmp_path):
    from orchestrator.env_report import hardware_profiles

    (tmp_path / "npu.yaml").write_text("name: npu\nbackend: tensorrt\nray_resource: hw_npu\n")
    rows = {r["name"]: r for r in hardware_profiles([tmp_path])}
    assert "backend" in rows["npu"]["error"] and "tensorrt" in rows["npu"]["error"]
    assert rows["cpu"]["resource"] == "hw_cpu"


def test_unreachable_address_is_bad_input():
    out = _run("-m", "pipelines.env", "--json", "--address", "127.0.0.1:1")
    assert out.returncode == 2
    assert "--address '127.0.0.1:1'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow  # starts the shared two-node test cluster (if no other test did)
def test_address_lists_the_cluster_nodes_and_their_resources(ray_cluster):
    env = dict(os.environ, RAY_AUTH_MODE=ray_cluster.env["RAY_AUTH_MODE"])
    out = subprocess.run([sys.executable, "-m", "pipelines.env", "--json", "--address", ray_cluster.address],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    cluster = json.loads(out.stdout)["cluster"]
    alive = [n for n in cluster["nodes"] if n["alive"]]
    by_label = {label: n for n in alive for label in ("node_a", "node_b") if label in n["custom_resources"]}
    assert set(by_label) == {"node_a", "node_b"}
    assert "hw_asic" in by_label["node_b"]["custom_resources"]
    assert "hw_asic" not in by_label["node_a"]["custom_resources"]
