"""The run's own Ray, on this machine, when no --address is given.

It is a `ray start --head --block` child of the driver: on 127.0.0.1, on a port of its own, in a
temporary folder of its own, so it never joins or disturbs another Ray on the machine (its
processes find their cluster through RAY_ADDRESS, never by looking for "the" local Ray). It ends with
the driver: `stop()` on every exit path, and the kernel's parent-death signal if the driver is
killed. If even that failed (the machine rebooted mid-kill, say), the next start removes what is
left, and only that: the processes of a recorded cluster whose driver is gone, found by process
group and temporary folder.

    ray_node = EmbeddedRay.start(resources={"hw_cpu": 1, "hw_asic": 1})
    ...
    ray_node.stop()
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120.0


def state_dir() -> Path:
    """Where running embedded clusters are recorded ($HALOC_STATE_DIR, default ~/.cache/haloc/embedded-ray)."""
    return Path(os.environ.get("HALOC_STATE_DIR", Path.home() / ".cache" / "haloc")) / "embedded-ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_binary() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the driver dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: stop() and the next start's clean-up still apply


@dataclass
class EmbeddedRay:
    address: str  # 127.0.0.1:port of its GCS
    dashboard: str  # 127.0.0.1:port
    temp_dir: str
    pgid: int
    driver_pid: int
    _proc: object = None

    @classmethod
    def start(cls, resources: dict, num_cpus: int | None = None, runtime_env: dict | None = None) -> EmbeddedRay:
        """Start the cluster, wait until its GCS answers, and connect this driver to it."""
        import ray

        from .ray_compat import enable_token_auth, ensure_auth_token, keep_embedded_ray_on_loopback

        clean_up_stale()
        keep_embedded_ray_on_loopback()  # in this process and, through the environment, in the cluster's
        ensure_auth_token()
        port, dash = _free_port(), _free_port()
        address = f"127.0.0.1:{port}"
        temp_dir = tempfile.mkdtemp(prefix="hr", dir="/tmp")  # short: Ray's socket paths are length-capped
        env = dict(os.environ, RAY_ADDRESS=address, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"),
                   RAY_USAGE_STATS_ENABLED="0")
        cmd = [_ray_binary(), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
               f"--temp-dir={temp_dir}", f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
        if num_cpus is not None:
            cmd.append(f"--num-cpus={num_cpus}")
        log = open(Path(temp_dir) / "ray_start.log", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        node = cls(address, f"127.0.0.1:{dash}", temp_dir, proc.pid, os.getpid(), proc)
        try:
            node._record()
            node._wait_until_up()
            os.environ["RAY_ADDRESS"] = address  # what this driver's helpers (state API, jobs) resolve
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            enable_token_auth()
            ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env)
        except BaseException:
            node.stop()
            raise
        return node

    def _wait_until_up(self) -> None:
        end = time.monotonic() + START_TIMEOUT_S
        port = int(self.address.rsplit(":", 1)[1])
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                tail = (Path(self.temp_dir) / "ray_start.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the embedded Ray did not start (exit {self._proc.returncode}):\n{tail}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the embedded Ray did not answer on {self.address} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Disconnect, stop the cluster's processes (its process group), remove its folder and record."""
        import ray

        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            _kill_group(self.pgid, self._proc)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self._record_path().unlink(missing_ok=True)
            if os.environ.get("RAY_ADDRESS") == self.address:
                del os.environ["RAY_ADDRESS"]

    def _record_path(self) -> Path:
        return state_dir() / f"{self.pgid}.json"

    def _record(self) -> None:
        folder = state_dir()
        folder.mkdir(parents=True, exist_ok=True)
        data = {"address": self.address, "dashboard": self.dashboard, "temp_dir": self.temp_dir, "pgid": self.pgid,
                "driver_pid": self.driver_pid}
        self._record_path().write_text(json.dumps(data))


def _kill_group(pgid: int, proc=None, grace_s: float = 3.0) -> None:
    """SIGTERM the group (`ray start --block` stops the processes it started), SIGKILL what stays.
    The grace is short: Ray 2.60's `ray start --block` stopped only some of its processes after SIGTERM
    and waited on the rest (GCS, raylet, the runtime-env agent) well past 15 s, every run. Nothing of
    the run lives in the embedded cluster (the store holds it all, the temporary folder goes next),
    so nothing is lost by killing it."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace_s
    while time.monotonic() < end and _group_alive(pgid):
        if proc is not None:
            proc.poll()
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group `pgid` is left. Zombies count as gone: where the
    machine's PID 1 does not reap orphans (some containers), they stay in the group for good, and a
    plain `killpg(pgid, 0)` kept every stop waiting out its whole grace period."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # stat after the name: state, ppid, pgrp, ...
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _group_members(pgid: int, temp_dir: str) -> list[int]:
    """Pids of process group `pgid` whose command line names `temp_dir` (Ray's own processes carry
    their session folder), or that are the group's leader: never another program's processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie (nobody reaped it, e.g. its parent died): nothing left to stop
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if int(entry.name) == pgid or temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


def clean_up_stale() -> list[int]:
    """Stop the embedded clusters recorded by drivers that are gone; returns the pids it ended."""
    ended = []
    folder = state_dir()
    if not folder.is_dir():
        return ended
    for record in folder.glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        if _pid_alive(int(data.get("driver_pid", -1))):
            continue  # another run's live embedded Ray
        for pid in _group_members(int(data["pgid"]), str(data["temp_dir"])):
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except ProcessLookupError:
                pass
        shutil.rmtree(data["temp_dir"], ignore_errors=True)
        record.unlink(missing_ok=True)
    return ended
