"""The box's own machinery, without Ray (a few seconds): hosts with their own address, hostname, home and
processes, reachable only through the box's network; a pulled cable; and a teardown that leaves nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .box import ClusterBox, HostSpec, cannot_create_namespaces

HOSTS = [HostSpec("client", 2, cluster=False), HostSpec("one", 10, offer_only="hw_cpu"), HostSpec("two", 11)]


@pytest.fixture
def box():
    why = cannot_create_namespaces()
    if why:
        pytest.skip(f"cluster box: {why}")
    made = ClusterBox.create(HOSTS)
    yield made
    made.close()


def _links() -> list[str]:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.split("\n")


def test_hosts_are_apart_and_reach_each_other_only_through_the_box(box):
    one = box.ssh("one", "hostname; echo $HOME; ls -A ~; cat ~/.bashrc; ip -o -4 addr show eth0; ps -e -o comm=")
    lines = one.stdout.splitlines()
    assert lines[0] == "box-one" and lines[1] == str(box.home)
    assert "HALOC_OFFER_ONLY=hw_cpu" in one.stdout and f"{HOSTS[1].address}/24" in one.stdout
    # its own PID namespace: its init, sshd and this session, nothing of the machine's
    assert len([c for c in lines if c in ("python", "sshd", "bash", "ps")]) >= 3 and "pytest" not in one.stdout
    two = box.ssh("two", f"ssh -o BatchMode=yes -o ConnectTimeout=5 {HOSTS[1].address} true; echo rc=$?")
    assert "rc=255" in two.stdout  # host two has no key for host one: a real sshd refuses it
    # nothing but the box's own addresses: no default route in a host
    assert "default" not in box.ssh("two", "ip route").stdout


def test_a_cut_cable_stops_ssh_until_it_is_plugged_back(box):
    box.cut("two")
    try:
        cut = box.ssh("two", "true", check=False, connect_timeout_s=2)
        assert cut.returncode == 255 and "timed out" in cut.stderr
    finally:
        box.restore("two")
    assert box.ssh("two", "echo back").stdout.strip() == "back"


def test_close_ends_every_box_process_and_removes_the_folder():
    why = cannot_create_namespaces()
    if why:
        pytest.skip(f"cluster box: {why}")
    links = _links()
    made = ClusterBox.create(HOSTS)
    pids = [pid for host in ("client", "one", "two") for pid in made.processes(host)]
    assert len(pids) >= 5  # three inits, two sshds
    root = made.root
    made.close()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not root.exists()
    assert _links() == links  # the machine's own network namespace never saw the box's interfaces
