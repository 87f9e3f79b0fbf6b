"""The cluster files: Ray's own launcher validation, the hardware resources they offer, and the
commands they run (executed through a real shell with a stand-in `ray` that records its arguments)."""
from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hw_profiles.profile import get_profile, list_profiles
from workers.detect import detect_resources

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "ray_cluster.yaml"
AWS = ROOT / "ray_cluster.aws.yaml"
JOIN = ROOT / "scripts" / "join_cluster.sh"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _profile_resources() -> set[str]:
    return {get_profile(name).ray_resource for name in list_profiles()}


@pytest.mark.parametrize("path", [LOCAL, AWS], ids=lambda p: p.name)
def test_ray_launcher_accepts_the_file(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_load(path))
    validate_config(config)  # raises on any schema or node-type problem
    assert config["head_node_type"] in config["available_node_types"]


def test_local_file_is_one_node_type_with_detected_resources():
    config = _load(LOCAL)
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config  # the local provider refuses them
    assert len(config["provider"]["worker_ips"]) >= 3  # GPU servers, Jetsons, simulator hosts
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert len(start) == 1 and "-m workers.detect" in start[0] and "--resources=" in start[0], key
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # `ray up` turns autoscaler v2 on, which cannot run the local provider: the head's own export wins
    assert "RAY_enable_autoscaler_v2=0" in [c for c in config["head_start_ray_commands"] if "ray start" in c][0]


def test_setup_puts_the_venvs_ray_on_the_login_path_once(tmp_path):
    """`ray down` runs a bare `ray stop` in a login shell on the head: the venv's bin must be on its PATH."""
    (setup,) = [c for c in _load(LOCAL)["setup_commands"] if ".bashrc" in c]
    assert setup in _load(AWS)["setup_commands"]
    home = tmp_path
    bin_dir = home / "haloc-ray" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "ray").write_text("#!/bin/sh\necho venv-ray \"$@\"\n")
    (bin_dir / "ray").chmod(0o755)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # `ray up` runs the setup commands again on every restart
        subprocess.run(["bash", "-c", setup], env=env, check=True, timeout=30)
    assert (home / ".bashrc").read_text().count("haloc-ray/.venv/bin") == 1
    # PATH names no folder with a real `ray`: were the venv's bin missing, the bare `ray stop` finds
    # nothing, and never stops this machine's Ray processes
    (home / "no-ray").mkdir()
    out = subprocess.run([shutil.which("bash"), "-c", "source ~/.bashrc; ray stop; echo $RAY_AUTH_MODE"],
                         env=dict(env, PATH=str(home / "no-ray")), capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["venv-ray", "stop", "token"]


def test_detection_can_offer_every_resource_the_profiles_need():
    offered = set()
    for jetson, cuda, zigzag in itertools.product((False, True), repeat=3):
        offered |= set(detect_resources(jetson=jetson, cuda=cuda, zigzag=zigzag))
    assert _profile_resources() <= offered, _profile_resources() - offered


def test_aws_node_types_offer_the_profiles_resources():
    config = _load(AWS)
    types = config["available_node_types"]
    offered = set().union(*(t.get("resources", {}) for t in types.values()))
    # Jetsons are not cloud machines: they join with scripts/join_cluster.sh, which the file names.
    assert _profile_resources() - {"hw_jetson"} <= offered
    assert "join_cluster.sh" in AWS.read_text()
    hw = {r for r in offered if r.startswith("hw_")}
    assert hw <= _profile_resources(), f"resources no profile uses (typo?): {hw - _profile_resources()}"
    for name, t in types.items():
        if name != config["head_node_type"]:
            # the pipeline checks feasibility against nodes that are up; a type at 0 would fail it
            assert t["min_workers"] >= 1 and t["max_workers"] >= t["min_workers"], name
    assert "0.0.0.0" not in AWS.read_text()


def test_both_files_set_up_the_venv_the_same_way():
    local, aws = _load(LOCAL), _load(AWS)
    assert local["setup_commands"] == aws["setup_commands"]
    assert "scripts/setup.sh" in local["setup_commands"][0]
    for config in (local, aws):
        assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
        assert ".venv" in config["rsync_exclude"]


def _fake_home(tmp_path: Path) -> tuple[Path, Path]:
    """HOME with ~/haloc-ray holding the real workers/ and python, and a `ray` that logs its argv as JSON."""
    repo = tmp_path / "haloc-ray"
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / "workers").symlink_to(ROOT / "workers")
    python = repo / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # a symlink would lose the venv
    python.chmod(0o755)
    (repo / ".venv" / "bin" / "activate").write_text(f'PATH="{repo}/.venv/bin:$PATH"\n')
    log = tmp_path / "ray_calls.jsonl"
    fake_ray = repo / ".venv" / "bin" / "ray"
    fake_ray.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake_ray.chmod(0o755)
    return tmp_path, log


def test_start_commands_pass_the_detected_resources_through_a_real_shell(tmp_path):
    home, log = _fake_home(tmp_path)
    config = _load(LOCAL)
    env = dict(os.environ, HOME=str(home), RAY_HEAD_IP="10.0.0.1")
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        subprocess.run(["bash", "-c", command], env=env, check=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [c for c in calls if c[0] == "start"]
    assert len(starts) == 2
    expected = detect_resources()
    for argv in starts:
        resources = [a for a in argv if a.startswith("--resources=")]
        assert len(resources) == 1, argv
        assert json.loads(resources[0].removeprefix("--resources=")) == expected
    assert "--head" in starts[0] and "--address=10.0.0.1:6379" in starts[1]


def test_join_script_without_address_prints_usage_and_exits_2():
    out = subprocess.run(["bash", str(JOIN)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "usage: bash scripts/join_cluster.sh HEAD_ADDRESS" in out.stderr


def test_join_script_refuses_without_a_venv(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(JOIN, tmp_path / "scripts" / "join_cluster.sh")
    out = subprocess.run(["bash", str(tmp_path / "scripts" / "join_cluster.sh"), "10.0.0.1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "no virtual environment" in out.stderr and "scripts/setup.sh" in out.stderr


@pytest.mark.slow  # imports torch and ray (about 10 s)
def test_join_script_dry_run_uses_the_same_detection():
    out = subprocess.run(["bash", str(JOIN), "10.0.0.1", "--dry-run", "--node-ip-address=10.0.0.7"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, RAY_AUTH_TOKEN="test-token"))
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)  # printed with bash's %q quoting
    assert argv[0].endswith(".venv/bin/ray") and argv[1] == "start"
    assert "--address=10.0.0.1:6379" in argv and "--node-ip-address=10.0.0.7" in argv
    resources = [a.removeprefix("--resources=") for a in argv if a.startswith("--resources=")]
    assert [json.loads(r) for r in resources] == [detect_resources()]
