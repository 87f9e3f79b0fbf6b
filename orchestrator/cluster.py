"""Cluster connection and hardware discovery: which node offers which custom resource.

An infeasible Ray request waits forever, so every hardware profile is checked against the alive
nodes' resources before anything is submitted (`check_profiles_feasible`).
"""
from __future__ import annotations

import os
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


_EMBEDDED = []  # the EmbeddedRay this process started, if any
_JOINED = []  # the cluster address this process connected to itself


def connect(address: str | None = None, num_cpus: int | None = None, resources: dict | None = None,
            py_modules: tuple[str, ...] = ()) -> None:
    """Connect the driver to Ray: an existing cluster at `address` ("auto" or "host:port"), or else the
    run's own embedded Ray on 127.0.0.1 offering this machine's detected hardware resources
    (orchestrator.embedded_ray; `disconnect()` stops it). `py_modules`: local module folders that Ray
    uploads to every node for this job (the user's model and data factories)."""
    if address:
        from .ray_compat import use_token_auth_if_a_token_exists

        check_reachable(address)  # Ray itself retries a dead address for minutes
        use_token_auth_if_a_token_exists()
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"py_modules": [str(p) for p in py_modules]} if py_modules else None
    if address:
        ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env)
        _JOINED.append(address)
        return
    from workers.detect import detect_resources

    from .embedded_ray import EmbeddedRay

    _EMBEDDED.append(EmbeddedRay.start(resources if resources is not None else detect_resources(), num_cpus,
                                       runtime_env=runtime_env))


def disconnect() -> None:
    """Leave what `connect` joined: stop the embedded Ray it started (every process of it), or
    disconnect from the cluster it joined (which runs on). A connection made elsewhere is left alone."""
    import ray

    while _EMBEDDED:
        _EMBEDDED.pop().stop()
    if _JOINED:
        _JOINED.clear()
        if ray.is_initialized():
            ray.shutdown()


def embedded_dashboard() -> str | None:
    return _EMBEDDED[-1].dashboard if _EMBEDDED else None


def check_reachable(address: str, timeout_s: float = 5.0) -> str:
    """BadInputError within about `timeout_s` unless `address` is a Ray cluster that answers; returns
    the host:port that was probed. Ray itself retries an unreachable address for minutes.

    Forms: host:port (a head's GCS), ray://host[:port] (Ray Client, port 10001 by default), and auto
    (RAY_ADDRESS, else the cluster `ray start` last started on this machine). The probe is a TCP
    connection, then a gRPC handshake: a port that accepts connections but is no Ray fails too.
    """
    target = _resolve_auto() if address == "auto" else address
    client = target.startswith("ray://")
    rest = target[len("ray://"):] if client else target
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "10001" if client else "")
    if not host or not port.isdigit():
        raise BadInputError(f"--address {address!r} is not host:port, ray://host[:port] or auto; pass e.g. "
                            "10.0.0.1:6379 or auto")
    fix = ("Fix: check the head's address and port (`ray status` on the head prints it; the default port is 6379, "
           "10001 for ray://)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BadInputError(f"--address {address!r}: nothing accepts connections at {host}:{port} within "
                            f"{timeout_s:g} s ({e}). {fix}") from None
    if os.environ.get("RAY_USE_TLS", "0") not in ("1", "true", "True"):  # a TLS cluster refuses a plain handshake
        import grpc

        channel = grpc.insecure_channel(f"{host}:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise BadInputError(f"--address {address!r}: {host}:{port} accepts connections but does not answer as a "
                                f"Ray cluster within {timeout_s:g} s. {fix}") from None
        finally:
            channel.close()
    return f"{host}:{port}"


def _resolve_auto() -> str:
    """What Ray's `auto` means here: RAY_ADDRESS, else the address file of the last `ray start`."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    path = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp/ray"), "ray_current_cluster")
    try:
        with open(path) as f:
            return f.read().strip().splitlines()[0]
    except (OSError, IndexError):
        raise BadInputError("--address auto: no Ray cluster was started on this machine (no RAY_ADDRESS and no "
                            f"{path}); start one with `ray start --head`, or pass the head's host:port") from None


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

    A timed profile (CPU, ONNX Runtime, CUDA, Jetson) whose nodes also run a simulator profile (ZigZag
    keeps the CPU busy), or another timed profile (`cpu` and `onnxruntime` time the same CPU), is
    measured in a later wave; simulators share nodes freely, and profiles on disjoint nodes stay in
    one wave and run concurrently (the usual cluster: ASIC-simulator hosts apart from GPU servers).
    """
    placement = placement if placement is not None else check_profiles_feasible(profiles)
    nodes = {p.name: {n.node_id for n, _ in placement[p.name]} for p in profiles}
    remaining = sorted(profiles, key=lambda p: not p.is_simulator)  # simulators first, as before
    waves = []
    while remaining:
        wave, simulating, timing = [], set(), set()
        for p in remaining:
            if p.is_simulator and not nodes[p.name] & timing:
                wave.append(p)
                simulating |= nodes[p.name]
            elif not p.is_simulator and not nodes[p.name] & (timing | simulating):
                wave.append(p)
                timing |= nodes[p.name]
        waves.append(wave)
        remaining = [p for p in remaining if p not in wave]
    return waves
