import pytest
import torch

import haloc
from haloc.hardware_loss import layer_flops
from haloc.layers import Tucker2Conv

# (name, params, MACs) of docs/method.md's baselines; tolerance 2% on MACs
BASELINES = [("resnet20", 0.27e6, 41e6), ("vgg16", 15e6, 314e6), ("resnet18", 11.69e6, 1.82e9)]


@pytest.mark.parametrize("name,n_params,macs", BASELINES)
def test_baseline_sizes(name, n_params, macs):
    model = haloc.models.create(name)
    x = torch.randn(1, *haloc.models.input_size(name))
    assert haloc.params(model) == pytest.approx(n_params, rel=0.03)
    assert haloc.flops(model, x) / 2 == pytest.approx(macs, rel=0.02)


def tucker2_flops(c_in, c_out, r_in, r_out, k, hw_in, hw_out, n=1):
    """Hand count (2 x MACs): 1x1 at input resolution, KxK core and 1x1 at output resolution."""
    return 2 * n * (hw_in * c_in * r_in + hw_out * r_in * r_out * k * k + hw_out * r_out * c_out)


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "resnet18"])
def test_compressed_flops_agree_with_hand_count_and_layer_sum(name):
    model = haloc.models.create(name)
    x = torch.randn(1, *haloc.models.input_size(name))
    specs = haloc.decomposable_layers(model, x)
    ranks = {n: max(1, s.max_rank // 4) for n, s in specs.items()}
    small = haloc.decompose(model, ranks)
    total, total_small = haloc.flops(model, x), haloc.flops(small, x)
    # the model's FLOPs change by exactly the per-layer difference (layer_flops counts each layer alone)
    delta = sum(layer_flops(specs[n], specs[n].max_rank) - layer_flops(specs[n], r) for n, r in ranks.items())
    assert total - total_small == delta
    assert total_small < total
    # one Tucker-2 layer against the hand formula
    name0, spec = [(n, s) for n, s in specs.items() if s.kind == "tucker2"][-1]
    r_in, r_out = spec.rank_pair(ranks[name0])
    h, w = spec.input_hw
    hw_out = ((h + 2 * spec.padding[0] - 3) // spec.stride[0] + 1) ** 2
    assert layer_flops(spec, ranks[name0]) == tucker2_flops(spec.in_channels, spec.out_channels, r_in, r_out, 3,
                                                             h * w, hw_out)


def test_params_of_tucker_layer():
    layer = Tucker2Conv(64, 128, 3, 32, bias=True)
    assert haloc.params(layer) == 64 * 32 + 32 * 32 * 9 + 32 * 128 + 128
