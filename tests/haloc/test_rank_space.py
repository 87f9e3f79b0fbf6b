import pytest

from haloc.decomposition import LayerSpec
from haloc.rank_space import RankSpace, build_rank_space, constant_step_candidates, latency_sensitive_candidates

SPEC = LayerSpec("layer3.0.conv2", "tucker2", "conv2d", 256, 256, (3, 3), input_hw=(14, 14))
# Measured on the development machine: CPU batch 1 latency (ms) of a 256-channel Tucker-2 block at 14x14;
# original 2.20 ms
CURVE = {0: 2.20, 112: 0.93, 120: 1.30, 128: 0.99, 152: 1.48, 160: 1.96, 168: 2.27, 176: 1.91,
         200: 3.01, 208: 3.22, 216: 2.65, 224: 2.58}


def test_constant_step_ends_with_max_rank():
    assert constant_step_candidates(SPEC, 64) == (64, 128, 192, 256)
    assert constant_step_candidates(LayerSpec("fc", "svd", "linear", 64, 10), 4) == (4, 8, 10)


def test_latency_sensitive_keeps_the_lower_staircase():
    # slower-than-original ranks (200..224) and ranks costing more than a larger one (120, 160, 168) go
    assert latency_sensitive_candidates(SPEC, CURVE) == (112, 128, 152, 176, 256)


def test_latency_sensitive_merges_equal_steps_onto_the_largest_rank():
    curve = {0: 10.0, 8: 2.0, 16: 2.01, 24: 2.0, 32: 4.0, 40: 4.02}
    spec = LayerSpec("c", "tucker2", "conv2d", 64, 64, (3, 3))
    assert latency_sensitive_candidates(spec, curve) == (24, 40, 64)


def test_max_candidates_thins_evenly():
    curve = {0: 100.0, **{r: float(r) for r in range(4, 64, 4)}}
    spec = LayerSpec("c", "tucker2", "conv2d", 64, 64, (3, 3))
    out = latency_sensitive_candidates(spec, curve, max_candidates=4)
    assert len(out) == 4 and out[0] == 4 and out[-1] == 64


def test_bad_input():
    with pytest.raises(ValueError, match="rank 0"):
        latency_sensitive_candidates(SPEC, {128: 1.0})
    with pytest.raises(ValueError, match="no latency curve"):
        build_rank_space({"a": SPEC}, "latency", curves={})
    with pytest.raises(ValueError, match="mode 'x' unknown"):
        build_rank_space({"a": SPEC}, "x")
    with pytest.raises(ValueError, match="ascending"):
        RankSpace({"a": (8, 4)})


@pytest.mark.parametrize("traced", [True, False])
def test_step_space_drops_ranks_that_cost_more_than_the_whole_layer(traced):
    import torch

    import haloc
    from haloc.rank_space import factored_cost

    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model, torch.zeros(1, 3, 32, 32) if traced else None)
    full = build_rank_space(specs, "step", step=4, drop_dominated=False)
    kept = build_rank_space(specs, "step", step=4)
    dropped = 0
    for name, spec in specs.items():
        whole = factored_cost(spec, spec.max_rank)
        assert kept.candidates[name][-1] == spec.max_rank
        assert all(factored_cost(spec, r) < whole for r in kept.candidates[name][:-1])
        gone = set(full.candidates[name]) - set(kept.candidates[name])
        assert all(factored_cost(spec, r) >= whole for r in gone)
        dropped += len(gone)
    assert dropped > 0
    if traced:  # its first 1x1 factor runs before the stride: 44..60 of 64 cost more FLOPs than the layer
        assert 44 not in kept.candidates["layer3.0.conv1"] and 40 in kept.candidates["layer3.0.conv1"]
