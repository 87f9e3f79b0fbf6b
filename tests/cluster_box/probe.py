"""Run on a box host, over ssh, to see the cluster as its head does (the file_mounts sync tests/ too):

    ~/haloc-ray/.venv/bin/python -m tests.cluster_box.probe --alive 3 --timeout 300

Waits until at least `--alive` nodes are alive, then prints one line `NODES <json>`: every node Ray knows
of, alive or dead, with its address, hostname and resources (Ray may print a dead node's last words around
it). Exit 1 if the count is not reached in time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def nodes() -> list[dict]:
    import ray

    return [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "hostname": n.get("NodeManagerHostname"),
             "alive": bool(n["Alive"]), "resources": {k: v for k, v in n["Resources"].items() if k.startswith("hw_")},
             "cpus": n["Resources"].get("CPU", 0)} for n in ray.nodes()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.cluster_box.probe")
    p.add_argument("--alive", type=int, default=1, help="wait until this many nodes are alive")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    import ray

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    end = time.monotonic() + args.timeout
    while True:
        found = nodes()
        if sum(n["alive"] for n in found) >= args.alive or time.monotonic() > end:
            break
        time.sleep(1)
    print("NODES " + json.dumps(found), flush=True)
    return 0 if sum(n["alive"] for n in found) >= args.alive else 1


if __name__ == "__main__":
    sys.exit(main())
