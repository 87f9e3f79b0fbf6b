"""Profiler actors on the nodes of each hardware kind: started for a stage, killed after it.

Profiling, calibration and validation all measure through `workers.profiler.LayerProfiler`
actors; this module is the one place that places them (`workers.profiler.actor_options`: a timing
actor takes its node's whole resource, simulators share one) after checking that every profile's
resource is offered (an infeasible Ray request would wait forever).

    with ProfilerPool(profiles) as pool:
        ref = pool.actors["cpu"][0].measure.remote(items)
"""
from __future__ import annotations

from .cluster import check_profiles_feasible


class ProfilerPool:
    """{hardware name: [actor, ...]} and the node id of each actor; `first_only`: one actor per
    hardware (validation measures whole models on one node per kind)."""

    def __init__(self, profiles, sim_actors_per_node: int = 2, first_only: bool = False):
        self.profiles = list(profiles)
        self.sim_actors_per_node = sim_actors_per_node
        self.first_only = first_only
        self.actors: dict[str, list] = {}
        self.nodes: dict[str, list[str]] = {}

    def start(self) -> ProfilerPool:
        import ray

        from workers.profiler import LayerProfiler, actor_options

        placement = check_profiles_feasible(self.profiles)  # fails within seconds, before any request
        for p in self.profiles:
            offers = placement[p.name][:1] if self.first_only else placement[p.name]
            opts = [o for node, amount in offers
                    for o in actor_options(p, node.node_id, amount, 1 if self.first_only else self.sim_actors_per_node)]
            self.actors[p.name] = [LayerProfiler.options(**o).remote(p.to_dict()) for o in opts]
        self.nodes = {name: ray.get([a.node_id.remote() for a in group]) for name, group in self.actors.items()}
        return self

    def stop(self) -> None:
        import ray

        for group in self.actors.values():
            for actor in group:
                ray.kill(actor, no_restart=True)
        self.actors = {}

    def __enter__(self) -> ProfilerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
