"""The latency profiler actor: measures LUT rows (and whole models) on the node it is pinned to.

Placement (decided by the orchestrator, see `actor_options`): a timing actor (torch) takes all of
its node's resource (`hw_cpu`, `hw_cuda`, `hw_jetson`), so two timing actors never share a node and
disturb each other's clocks; a simulator actor (zigzag) takes a share of `hw_asic`, so several
simulate in parallel on one node (simulation has no timing noise). Every actor is pinned to its node
by a hard node-affinity strategy.

Fault tolerance: a killed actor is restarted (`max_restarts`) and its unfinished calls are retried
on the restarted actor (`max_task_retries`); a call is pure (rows in, rows out), so a retry cannot
write anything twice: only the driver writes, after a call has returned.
"""
from __future__ import annotations

import uuid

import ray

from hw_profiles.lut import LutRow
from hw_profiles.profile import HardwareProfile
from hw_profiles.signature import LayerSignature

MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
ROWS_METRIC = "haloc_lut_rows_measured"


@ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
class LayerProfiler:
    def __init__(self, profile: dict):
        from ray.util.metrics import Counter

        self.profile = HardwareProfile(**profile)
        self._rows = Counter(ROWS_METRIC, description="LUT rows measured by profiler actors", tag_keys=("hardware",))
        self._clock = None  # the reference workload, made at the first timing (its fastest time is this node's)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def _reference(self):
        from hw_profiles.measure import reference_clock

        if self._clock is None:
            self._clock = reference_clock(self.profile)
        return self._clock

    def measure(self, items: list[tuple[LayerSignature, int]], force_interleaved: bool = False) -> list[LutRow]:
        """One LUT row per (signature, rank), in order; noisy rows come back flagged (`noisy`)."""
        from hw_profiles.measure import measure_rows

        rows = measure_rows(self.profile, items, self._reference(), force_interleaved)
        self._rows.inc(len(rows), tags={"hardware": self.profile.name})
        return rows

    def measure_models(self, model, configs: list[dict], batch: int, rounds: int | None = None) -> list[dict]:
        """End-to-end latency statistics of the model decomposed with each ranks config, all timed
        interleaved in this one actor (hw_profiles.measure.measure_models)."""
        from hw_profiles.measure import measure_models

        return measure_models(self.profile, model, configs, batch, rounds, self._reference())


def actor_options(profile: HardwareProfile, node_id: str, node_offer: float, sim_actors_per_node: int) -> list[dict]:
    """`.options(...)` of the actors to start on one node offering `node_offer` of the profile's resource."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    count = max(1, sim_actors_per_node) if profile.is_simulator else 1
    share = node_offer / count  # a timing actor takes the node's whole offer
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    # num_cpus=0: the custom resource alone pins and limits the actors; torch threads come from the profile.
    # Named, so the Ray dashboard shows which hardware each profiler measures (a suffix keeps two runs apart).
    return [dict(resources={profile.ray_resource: share}, num_cpus=0, scheduling_strategy=strategy,
                 name=f"profiler:{profile.name}:{node_id[:8]}:{i}:{uuid.uuid4().hex[:6]}")
            for i in range(count)]
