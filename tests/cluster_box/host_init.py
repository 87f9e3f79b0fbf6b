"""PID 1 of one box host: its private mounts and hostname, then sshd in the foreground, reaping orphans.

Run by `box.py` inside fresh namespaces (`unshare --net --pid --mount --uts --fork --kill-child`),
with `python -I -S host_init.py CONFIG.json` (no site-packages: it needs none). It waits until the box
has plugged in its network (the `ready` file), then:

- /tmp, /etc/hosts, /run, /dev/shm and the mount point of the shared store are the host's own, so Ray's
  session dirs, the launcher's state files and sshd's runtime files never meet the other hosts' or the
  machine's;
- root's home is a private folder (its ~/.bashrc, ~/.ray, ~/haloc-ray), with the paths that must stay
  visible bound back into it (the base Python the venv links to, and on the client the repository);
- on a cluster host the project's venv is an overlay of the machine's venv, mounted where its scripts'
  shebangs point and at ~/haloc-ray/.venv: the launcher's `pip install -e` writes into this host's
  upper layer only, never into the shared venv.

Everything mounted here disappears with the mount namespace when the box kills this process.
"""
from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def bind(source: str, target: str, *, read_only: bool = False, recursive: bool = False) -> None:
    Path(target).mkdir(parents=True, exist_ok=True)
    sh("mount", "--rbind" if recursive else "--bind", source, target)
    if read_only:
        sh("mount", "-o", "remount,bind,ro", target)


def tmpfs(target: str, size: str) -> None:
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", target)


def wait_for(path: Path, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > end:
            sys.exit(f"host_init: {path} did not appear within {timeout_s} s (the box never plugged in the network)")
        time.sleep(0.05)


def set_up_mounts(cfg: dict) -> None:
    home = pwd.getpwuid(0).pw_dir
    sh("mount", "--make-rprivate", "/")  # belt and braces: nothing mounted here propagates to the machine
    if cfg.get("venv_overlay"):
        o = cfg["venv_overlay"]
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={o['lower']},upperdir={o['upper']},workdir={o['work']}", o["staging"])
    bind(cfg["tmp"], "/tmp")
    tmpfs("/dev/shm", cfg.get("shm_size", "1g"))
    tmpfs("/run", "64m")
    Path("/run/sshd").mkdir(mode=0o755)
    sh("mount", "--bind", cfg["hosts_file"], "/etc/hosts")
    if cfg.get("store"):
        tmpfs("/mnt", "16m")
        bind(cfg["store"]["source"], cfg["store"]["target"])
    private = cfg["home"]
    for path in cfg.get("keep_in_home", []):  # e.g. ~/.pyenv: the venv's python lives there
        bind(path, private + "/" + os.path.relpath(path, home), read_only=True, recursive=True)
    sh("mount", "--rbind", private, home)
    if cfg.get("venv_overlay"):
        for target in cfg["venv_overlay"]["targets"]:
            bind(cfg["venv_overlay"]["staging"], target)


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    wait_for(Path(cfg["ready_file"]), 60)
    socket.sethostname(cfg["hostname"])
    set_up_mounts(cfg)
    children = set()
    if cfg.get("sshd_config"):
        log = open(cfg["sshd_log"], "ab")
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg["sshd_config"]], stdout=log, stderr=log)
        children.add(sshd.pid)
    Path(cfg["started_file"]).write_text(str(os.getpid()))
    while True:  # as PID 1, every orphan of the namespace (Ray's daemons) becomes ours to reap
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


if __name__ == "__main__":
    main()
