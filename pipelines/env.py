"""python -m pipelines.env [--address auto|host:port] [--json]: versions, devices, Ray resources and
hardware profiles, for bug reports. Without --address it only looks at this machine (Ray is not started).

Exit codes: 0 done; 2 bad input (e.g. no cluster at --address); 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import sys

from haloc.errors import BadInputError, as_flag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.env", description=__doc__.splitlines()[0])
    p.add_argument("--address", help="also list the nodes of the Ray cluster at this address (auto or host:port)")
    p.add_argument("--profile-dir", action="append", default=[],
                   help="a folder of extra hardware profiles (*.yaml), as the pipelines take it; repeatable")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return p


def _table(title: str, columns: list[str], rows: list[list]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("-" if v is None else str(v) for v in r))
    return table


def print_report(report: dict, console=None) -> None:
    """The report as rich tables (the data comes from orchestrator.env_report.gather_env)."""
    from rich.console import Console

    console = console or Console()
    versions = dict(report["versions"], platform=report["platform"]["system"])
    console.print(_table("Versions", ["package", "version"], [[k, v] for k, v in versions.items()]))
    cuda = report["cuda"]
    rows = [[d["index"], d["name"], d["capability"], d["memory_gib"]] for d in cuda["devices"]]
    console.print(_table(f"CUDA devices (available: {cuda['available']}, CUDA {cuda['cuda_version']})",
                         ["index", "name", "capability", "memory GiB"], rows or [["-", "none", "-", "-"]]))
    node = report["node"]
    console.print(_table(f"This node (workers.detect, Jetson: {node['jetson']})",
                         ["resource", "amount"], [[k, v] for k, v in node["resources"].items()]))
    rows = [[p["name"], p.get("backend"), p.get("resource"), p.get("device"), p.get("batch_size"), p.get("dtype"),
             p.get("error", "")] for p in report["profiles"]]
    console.print(_table("Hardware profiles", ["name", "backend", "resource", "device", "batch", "dtype", "error"],
                         rows))
    cluster = report["cluster"]
    if cluster is not None:
        rows = [[n["node_id"][:12], n["address"], n["alive"], n["cpus"], n["gpus"],
                 json.dumps(n["custom_resources"], sort_keys=True)] for n in cluster["nodes"]]
        console.print(_table(f"Cluster at {cluster['address']}", ["node", "address", "alive", "CPU", "GPU",
                                                                   "custom resources"], rows))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.address:
        from orchestrator.ray_compat import use_token_auth_if_a_token_exists

        use_token_auth_if_a_token_exists()
    try:
        from orchestrator.env_report import gather_env

        report = gather_env(args.address, args.profile_dir)
    except BadInputError as e:
        print(f"error: {e.render(as_flag)}", file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(f"error: --address {args.address!r}: no Ray cluster reachable there ({e}). Fix: check the address "
              "(`ray status` on the head prints it) or leave --address out for this machine only", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
