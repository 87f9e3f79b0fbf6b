"""The user's side of the box: the repository's cluster file filled in for the box, and Ray's launcher
commands typed on the client (`ray up`, `ray down`, `ray dashboard`), as docs/cluster.md gives them."""
from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import yaml

from .box import ROOT, BoxError, ClusterBox, kill_group

CLUSTER_FILE = ROOT / "ray_cluster.yaml"
SSH_USER = "root"  # the box runs as root; a real cluster uses any account with the same key on every host


def filled_in(box: ClusterBox, source: Path = CLUSTER_FILE) -> dict:
    """ray_cluster.yaml with the box's head and worker addresses and ssh user: the placeholders a user
    replaces, and nothing else (the key stays ~/.ssh/id_ed25519, where the box put the client's key)."""
    config = yaml.safe_load(source.read_text())
    out = copy.deepcopy(config)
    workers = [s.address for s in box.specs.values() if s.cluster and s.name != "head"]
    out["provider"]["head_ip"] = box.specs["head"].address
    out["provider"]["worker_ips"] = workers
    out["auth"]["ssh_user"] = SSH_USER
    out["min_workers"] = out["max_workers"] = len(workers)
    return out


def placeholders_only(original: dict, filled: dict) -> set[str]:
    """The top-level keys where the two files differ (the test asserts these are the placeholders' keys)."""
    return {k for k in original.keys() | filled.keys() if original.get(k) != filled.get(k)}


def write_cluster_file(box: ClusterBox) -> Path:
    path = box.root / "ray_cluster.box.yaml"
    path.write_text("# ray_cluster.yaml filled in for the cluster box (tests/cluster_box/launcher.py)\n"
                    + yaml.safe_dump(filled_in(box), sort_keys=False))
    return path


class Launcher:
    """Ray's launcher on the client, from the repository root, as a user runs it; every command's output
    goes to a log in the box folder."""

    def __init__(self, box: ClusterBox, cluster_file: Path):
        self.box, self.file = box, cluster_file
        self.logs = box.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self._count = 0

    def ray(self, *args: str, timeout: float = 900, check: bool = True, env: dict | None = None):
        self._count += 1
        name = f"{self._count:02d}-ray-{args[0]}.log"
        proc = self.box.popen("client", ["ray", *args], cwd=ROOT, env=env, log=self.logs / name)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait()
            raise BoxError(f"`ray {' '.join(args)}` ran past {timeout} s; log: {self.logs / name}\n"
                           + (self.logs / name).read_text(errors="replace")[-4000:]) from None
        text = (self.logs / name).read_text(errors="replace")
        if check and proc.returncode != 0:
            raise BoxError(f"`ray {' '.join(args)}` exited {proc.returncode}; log: {self.logs / name}\n{text[-4000:]}")
        return proc.returncode, text

    # Ray waits a fixed 30 s for a new node's raylet to register with the GCS; on a machine loaded far
    # beyond its cores (a shared CI host) the head can miss that. Rerunning `ray up` is the user's remedy
    # (it restarts Ray on the head), and the only failure retried here.
    OVERLOADED = "The current node timed out during startup"

    def up(self, timeout: float = 900, attempts: int = 2) -> str:
        started = time.monotonic()
        for attempt in range(attempts):
            code, text = self.ray("up", str(self.file), "--yes", "--no-config-cache", timeout=timeout, check=False)
            if code == 0:
                break
            if self.OVERLOADED not in text or attempt == attempts - 1:
                raise BoxError(f"`ray up` exited {code}; logs in {self.logs}\n{text[-4000:]}")
        self.last_up_s = time.monotonic() - started
        return text

    def down(self, timeout: float = 300) -> str:
        return self.ray("down", str(self.file), "--yes", timeout=timeout)[1]

    def dashboard(self) -> subprocess.Popen:
        """`ray dashboard FILE`: an ssh tunnel from the client's localhost:8265 to the head's 127.0.0.1:8265."""
        self._count += 1
        return self.box.popen("client", ["ray", "dashboard", str(self.file)], cwd=ROOT,
                              log=self.logs / f"{self._count:02d}-ray-dashboard.log")
