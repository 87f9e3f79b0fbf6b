"""A cluster made by `ray up` in a box, and what the tests do with it as a user would: ssh to the head,
run the pipeline there, submit jobs through the dashboard tunnel, read the shared store."""
from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .box import ROOT, STORE, BoxError, ClusterBox, kill_group
from .launcher import Launcher

PROJECT = "~/haloc-ray"  # the cluster file's file_mounts target on every host
JOB_RUNTIME_ENV = {"working_dir": ".", "excludes": [".venv", "runs"]}  # .venv: a 6 GB venv (or a link to one)


def wait_for(cond, timeout_s: float, what: str, poll_s: float = 0.5):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class BoxCluster:
    box: ClusterBox
    launcher: Launcher
    hardware: list[str]  # the pipeline's --hardware for the box's hosts
    times: dict = field(default_factory=dict)
    venv_before: dict = field(default_factory=dict)  # venv_fingerprint() before `ray up`

    @staticmethod
    def venv_fingerprint() -> dict[str, str]:
        """sha256 of the machine's venv's editable-install files: what a stray `pip install -e` would rewrite."""
        import hashlib
        import sysconfig

        site = Path(sysconfig.get_paths()["purelib"])
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(site.glob("__editable__*"))}

    @property
    def cluster_hosts(self) -> list[str]:
        return [s.name for s in self.box.specs.values() if s.cluster]

    # ---- the cluster as the head sees it ----------------------------------------------------------------

    def nodes(self, alive: int, timeout_s: float = 300) -> list[dict]:
        """Every node Ray knows (probe.py on the head), once at least `alive` are alive."""
        out = self.box.ssh("head", f"cd {PROJECT} && .venv/bin/python -m tests.cluster_box.probe --alive {alive} "
                                   f"--timeout {timeout_s:.0f}", timeout=timeout_s + 120, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("NODES ")]
        if out.returncode != 0 or not lines:
            raise AssertionError(f"fewer than {alive} nodes alive after {timeout_s:.0f} s: {out.stdout[-2000:]}\n"
                                 f"{out.stderr[-2000:]}")
        return json.loads(lines[-1].removeprefix("NODES "))

    def bring_up(self, join_timeout_s: float = 300) -> None:
        """`ray up`, then wait until every host has joined. A worker whose start failed is never retried by
        Ray's autoscaler (v1 gives up on a node after one failed update; on a machine loaded far beyond its
        cores a `ray start` can miss Ray's fixed 30 s registration), so, as a user would, `ray up` is rerun
        once; the times line of the session counts such reruns."""
        self.launcher.up()
        try:
            self.nodes(alive=len(self.cluster_hosts), timeout_s=join_timeout_s)
        except AssertionError:
            self.times["ray up reruns"] = self.times.get("ray up reruns", 0) + 1
            self.launcher.up()
            self.nodes(alive=len(self.cluster_hosts), timeout_s=join_timeout_s)

    def alive_by_host(self) -> dict[str, dict]:
        """{hostname: node} of the alive nodes."""
        return {n["hostname"]: n for n in self.nodes(alive=1) if n["alive"]}

    def ray_processes(self, host: str) -> list[str]:
        return [c for c in self.box.processes(host).values() if re.search(r"raylet|gcs_server|ray::", c)]

    def gcs_log(self) -> str:
        """The head's GCS log of its newest Ray session (read from the head's /tmp on this machine)."""
        sessions = sorted((self.box.hosts["head"].dir / "tmp" / "ray").glob("session_2*"))
        if not sessions:
            return ""
        try:
            return (sessions[-1] / "logs" / "gcs_server.out").read_text(errors="replace")
        except OSError:
            return ""

    def marked_dead(self, host: str) -> bool:
        address = self.box.specs[host].address
        return any(address in line and "marked dead" in line for line in self.gcs_log().splitlines())

    # ---- the pipeline ------------------------------------------------------------------------------------

    def pipeline_args(self, run_id: str, *extra: str, module: str = "pipelines.imagenet_resnet18") -> list[str]:
        return ["python", "-m", module, *extra, "--address", "auto", "--store", STORE, "--run-id", run_id]

    def on_head(self, args: list[str], log: Path) -> subprocess.Popen:
        """The pipeline started on the head (ssh, then in ~/haloc-ray with its venv), output to `log`."""
        command = f"cd {PROJECT} && .venv/bin/{shlex.join(args)}"
        return self.box.popen("client", self.box.ssh_argv("head", command), log=log)

    def store(self, run_id: str) -> Path:
        """The run's folder in the shared store, as this machine sees it."""
        return self.box.root / "store" / run_id

    def manifest(self, run_id: str) -> dict:
        try:
            return json.loads((self.store(run_id) / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}

    def stage(self, run_id: str, stage: str) -> dict:
        return self.manifest(run_id).get("stages", {}).get(stage, {})

    # ---- jobs, through the dashboard ---------------------------------------------------------------------

    @contextlib.contextmanager
    def dashboard_tunnel(self, timeout_s: float = 60):
        """`ray dashboard FILE` on the client while the block runs: the head's 127.0.0.1:8265 at the
        client's localhost:8265."""
        proc = self.launcher.dashboard()
        try:
            wait_for(lambda: proc.poll() is not None or self._client_port_open(8265), timeout_s, "the dashboard tunnel")
            if proc.poll() is not None:
                raise BoxError(f"`ray dashboard` exited {proc.returncode}")
            yield "http://127.0.0.1:8265"
        finally:
            kill_group(proc)
            proc.wait(timeout=30)

    def _client_port_open(self, port: int) -> bool:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
        return self.box.run("client", ["python", "-c", probe], check=False, timeout=30).returncode == 0

    def submit(self, address: str, submission_id: str, args: list[str], log: Path) -> subprocess.Popen:
        """`ray job submit` from the repository root on the client: the working directory goes to the cluster."""
        # The entrypoint first says where the project's code came from: the uploaded working directory.
        where = "python -c 'import pipelines; print(\"project code from\", pipelines.__path__[0])'"
        argv = ["ray", "job", "submit", "--address", address, "--submission-id", submission_id,
                "--runtime-env-json", json.dumps(JOB_RUNTIME_ENV), "--", "sh", "-c",
                f"{where} && exec {shlex.join(args)}"]
        return self.box.popen("client", argv, cwd=ROOT, env=self.box.env("client", RAY_AUTH_MODE="token"), log=log)

    def client_http(self, url: str, token: bool = True) -> tuple[int, str]:
        """GET `url` on the client, with the cluster's token (Ray 2.60's dashboard wants it) or without."""
        script = ("import sys, pathlib, urllib.request, urllib.error\n"
                  "token = pathlib.Path.home().joinpath('.ray/auth_token').read_text().strip()\n"
                  "headers = {'Authorization': 'Bearer ' + token} if sys.argv[2] == '1' else {}\n"
                  "req = urllib.request.Request(sys.argv[1], headers=headers)\n"
                  "try:\n    r = urllib.request.urlopen(req, timeout=20); print(r.status); print(r.read().decode())\n"
                  "except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n")
        out = self.box.run("client", ["python", "-c", script, url, "1" if token else "0"], timeout=60)
        status, _, body = out.stdout.partition("\n")
        return int(status), body

    def client_connect(self, host: str, port: int) -> bool:
        """Whether the client can open a TCP connection to host:port."""
        script = f"import socket; s = socket.socket(); s.settimeout(5); print(s.connect_ex(({host!r}, {port})))"
        return self.box.run("client", ["python", "-c", script], timeout=30).stdout.strip() == "0"
