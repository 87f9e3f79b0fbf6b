import time

import pytest

from haloc.errors import BadInputError
from hw_profiles.profile import get_profile
from orchestrator.cluster import check_profiles_feasible, list_nodes


def test_nodes_and_their_custom_resources(ray_cluster):
    nodes = {n.node_id: n.custom_resources for n in list_nodes()}
    ids = ray_cluster.node_ids()
    assert nodes[ids["node_a"]] == {"hw_cpu": 1.0, "node_a": 1.0}
    assert nodes[ids["node_b"]] == {"hw_cpu": 1.0, "hw_asic": 1.0, "node_b": 1.0}


def test_feasible_profiles_map_to_the_nodes_offering_them(ray_cluster):
    ids = ray_cluster.node_ids()
    placement = check_profiles_feasible([get_profile("cpu"), get_profile("asic")])
    assert {n.node_id for n, _ in placement["cpu"]} == {ids["node_a"], ids["node_b"]}
    assert [n.node_id for n, _ in placement["asic"]] == [ids["node_b"]]


@pytest.mark.parametrize("name, resource", [("jetson", "hw_jetson"), ("cuda", "hw_cuda")])
def test_missing_resource_fails_fast_naming_it_and_the_offers(ray_cluster, name, resource):
    start = time.monotonic()
    with pytest.raises(BadInputError) as err:
        check_profiles_feasible([get_profile("cpu"), get_profile(name)])
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert repr(resource) in msg and "hw_asic" in msg and "ray start --resources" in msg
