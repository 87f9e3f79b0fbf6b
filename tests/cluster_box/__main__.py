"""Start a cluster box and keep it until Ctrl-C, to try the launcher by hand (root, Linux):

    .venv/bin/python -m tests.cluster_box          # hosts only; then `ray up` yourself in the client
    .venv/bin/python -m tests.cluster_box --up     # and run `ray up` on the repository's cluster file

It prints the command that opens a shell on the client ("your machine", in the repository, venv
active); from there `ray up`, `ray status` over ssh, `ray dashboard`, `ray job submit` and `ray down`
work as in docs/cluster.md. Ctrl-C kills every box process and removes the box folder.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time

from .box import ROOT, STORE, ClusterBox, cannot_create_namespaces
from .launcher import Launcher, write_cluster_file
from .layout import default_hosts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.cluster_box", description=__doc__.splitlines()[0])
    p.add_argument("--up", action="store_true", help="also run `ray up` with the filled-in cluster file")
    p.add_argument("--keep", action="store_true", help="keep the box folder (logs) after Ctrl-C")
    args = p.parse_args(argv)
    why = cannot_create_namespaces()
    if why:
        print(f"error: cannot build a cluster box here: {why}", file=sys.stderr)
        return 2
    hosts = default_hosts()
    box = ClusterBox.create(hosts)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        cluster_file = write_cluster_file(box)
        print(f"box up in {box.started_s:.1f} s: folder {box.root}")
        for h in hosts:
            role = f"HALOC_OFFER_ONLY={h.offer_only!r}" if h.cluster else "client (your machine)"
            print(f"  {h.hostname:12s} {h.address:12s} {role}")
        print(f"cluster file: {cluster_file}; shared store on every host: {STORE}")
        shell = box.command("client", ["bash", "-l"], cwd=ROOT, env=box.env("client", PS1="(box client) \\w# "))
        print(f"a shell on the client:\n  {shlex.join(shell)}")
        if args.up:
            launcher = Launcher(box, cluster_file)
            launcher.ray("get-auth-token", "--generate")
            launcher.up()
            print(f"ray up done in {launcher.last_up_s:.0f} s; logs in {launcher.logs}")
        print("Ctrl-C ends the box")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        box.close(keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
