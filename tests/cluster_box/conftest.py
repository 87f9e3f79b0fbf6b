"""The box's fixture: one cluster box per test module, with the repository's ray_cluster.yaml brought up
by `ray up --yes --no-config-cache` from the client. Set HALOC_BOX_KEEP=1 to keep the box's folder
(every host's /tmp with Ray's logs, the launcher's logs, the store) after the tests."""
from __future__ import annotations

import os
import time

import pytest

from .box import ClusterBox, cannot_create_namespaces
from .cluster import BoxCluster
from .launcher import Launcher, write_cluster_file
from .layout import default_hosts, hardware_of

TIMES: dict[str, float] = {}  # what the box took, printed at the end of the test session


def pytest_terminal_summary(terminalreporter):
    if TIMES:
        terminalreporter.write_line("cluster box: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()))


@pytest.fixture(scope="module")
def cluster():
    why = cannot_create_namespaces()
    if why:
        pytest.skip(f"cluster box: {why}")
    root = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
    if root == "/tmp" or root.startswith("/tmp/"):  # every host mounts a /tmp of its own over the machine's
        pytest.fail(f"cluster box: the checkout {root} is under /tmp, which each box host replaces with its "
                    "own, so the hosts cannot see it ('directory has vanished'); clone it elsewhere (e.g. "
                    "under your home) and run the suite from there", pytrace=False)
    keep = os.environ.get("HALOC_BOX_KEEP") == "1"
    started = time.monotonic()
    hosts = default_hosts()
    venv_before = BoxCluster.venv_fingerprint()
    box = ClusterBox.create(hosts, keep_on_failure=keep)
    TIMES["box start"] = box.started_s
    try:
        launcher = Launcher(box, write_cluster_file(box))
        launcher.ray("get-auth-token", "--generate")  # docs/cluster.md: once, on the machine you launch from
        made = BoxCluster(box, launcher, hardware_of(hosts), TIMES, venv_before)
        made.bring_up()
        TIMES["ray up"] = launcher.last_up_s
        TIMES["up to all nodes joined"] = time.monotonic() - started - box.started_s
        yield made
    finally:
        box.close(keep=keep)
        TIMES["whole box"] = time.monotonic() - started
