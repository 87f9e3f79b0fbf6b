"""Cluster connection and hardware discovery: which node offers which custom resource.

An infeasible Ray request waits forever, so every hardware profile is checked against the alive
nodes' resources before anything is submitted (`check_profiles_feasible`).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from haloc.errors import BadInputError

# Resources every Ray node has; listing them beside the custom ones would only add noise.
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type")


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    alive: bool
    resources: dict  # total resources, custom ones included

    @property
    def custom_resources(self) -> dict:
        return {k: v for k, v in self.resources.items() if not k.startswith(_BUILTIN) and not k.startswith("node:")}


def connect(address: str | None = None, num_cpus: int | None = None, resources: dict | None = None) -> None:
    """Connect the driver to Ray: an existing cluster at `address` ("auto" or "host:port"), or else an
    embedded local Ray on 127.0.0.1 offering this machine's detected hardware resources."""
    if address:
        from .ray_compat import use_token_auth_if_a_token_exists

        check_reachable(address)  # Ray itself retries a dead address for minutes
        use_token_auth_if_a_token_exists()
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
        return
    from workers.detect import detect_resources

    from .ray_compat import keep_embedded_ray_on_loopback

    keep_embedded_ray_on_loopback()
    ray.init(num_cpus=num_cpus, resources=resources if resources is not None else detect_resources(),
             _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", logging_level="WARNING")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """BadInputError unless host:port accepts a TCP connection ("auto" is left to Ray, which fails fast).
    Ray itself retries an unreachable address for minutes before giving up."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--address {address!r} is not host:port or auto; pass e.g. 10.0.0.1:6379 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BadInputError(f"--address {address!r}: nothing accepts connections there ({e}). Fix: check the head's "
                            "address and port (`ray status` on the head prints it; the default port is 6379)") from e


def list_nodes(alive_only: bool = True) -> list[NodeInfo]:
    import ray

    nodes = [NodeInfo(n["NodeID"], n.get("NodeManagerAddress", ""), bool(n["Alive"]), dict(n["Resources"]))
             for n in ray.nodes()]
    return [n for n in nodes if n.alive or not alive_only]


def offers(resource: str, nodes: list[NodeInfo] | None = None) -> list[tuple[NodeInfo, float]]:
    """(node, amount) of every alive node offering `resource`."""
    nodes = list_nodes() if nodes is None else nodes
    return [(n, n.resources[resource]) for n in nodes if n.resources.get(resource, 0) > 0]


def describe_offers(nodes: list[NodeInfo]) -> str:
    text = "; ".join(f"node {n.node_id[:8]}: {n.custom_resources or 'no custom resources'}" for n in nodes)
    return text or "no nodes"


def check_profiles_feasible(profiles) -> dict[str, list[tuple[NodeInfo, float]]]:
    """{profile name: [(node, amount), ...]} for every profile, or BadInputError naming the first
    profile whose resource no alive node offers, and what the cluster offers instead."""
    nodes = list_nodes()
    placement = {}
    for p in profiles:
        found = offers(p.ray_resource, nodes)
        if not found:
            raise BadInputError(
                f"hardware profile {p.name!r} needs Ray resource {p.ray_resource!r}, which no node of the cluster "
                f"offers (cluster: {describe_offers(nodes)}). Fix: start a node with "
                f"`ray start --resources='{{\"{p.ray_resource}\": 1}}'` (see `python -m workers.detect`), "
                f"or drop {p.name!r} from the hardware list")
        placement[p.name] = found
    return placement


def measurement_waves(profiles, placement: dict | None = None) -> list[list]:
    """Profiles grouped so that a wall-clock timing never shares a node with other work.

    A torch-timed profile (CPU, CUDA, Jetson) whose nodes also run a simulator profile (ZigZag keeps
    the CPU busy) is measured in a later wave, alone; profiles on disjoint nodes stay in one wave
    and run concurrently (the usual cluster: ASIC-simulator hosts apart from GPU servers).
    """
    placement = placement if placement is not None else check_profiles_feasible(profiles)
    nodes = {p.name: {n.node_id for n, _ in placement[p.name]} for p in profiles}
    sim_nodes = set().union(*(nodes[p.name] for p in profiles if p.is_simulator)) if profiles else set()
    first = [p for p in profiles if p.is_simulator or not (nodes[p.name] & sim_nodes)]
    later = [p for p in profiles if p not in first]
    return [w for w in (first, later) if w]
