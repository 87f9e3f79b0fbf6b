import copy

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

import haloc
from haloc.layers import SVDConv2d, SVDLinear, Tucker2Conv, tucker2_factors

torch.manual_seed(0)

CONV_CASES = [  # (c_in, c_out, kernel, stride, padding, dilation, bias)
    (8, 8, 3, 1, 1, 1, False),
    (8, 16, 3, 2, 1, 1, True),
    (16, 6, 3, 1, 0, 1, True),
    (6, 12, 5, 2, 2, 1, False),
    (8, 8, 3, 1, 2, 2, True),
    (12, 10, (3, 1), 1, (1, 0), 1, False),
]


class Net(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("c_in,c_out,k,stride,pad,dil,bias", CONV_CASES)
def test_tucker2_full_rank_is_exact(c_in, c_out, k, stride, pad, dil, bias):
    conv = nn.Conv2d(c_in, c_out, k, stride, pad, dil, bias=bias)
    x = torch.randn(2, c_in, 11, 11)
    spec = haloc.decomposable_layers(Net(conv))["conv"]
    assert spec.kind == "tucker2" and spec.max_rank == max(c_in, c_out)
    out = haloc.decompose(Net(conv), {"conv": spec.max_rank})
    assert isinstance(out.conv, Tucker2Conv) and out.conv.rank == (c_in, c_out)
    assert_close(out(x), conv(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride,pad,bias", [(1, 0, False), (2, 0, True), (1, 1, True)])
def test_svd_conv1x1_full_rank_is_exact(stride, pad, bias):
    conv = nn.Conv2d(12, 20, 1, stride, pad, bias=bias)
    spec = haloc.decomposable_layers(Net(conv))["conv"]
    assert spec.kind == "svd" and spec.max_rank == 12
    out = haloc.decompose(Net(conv), {"conv": 12})
    assert isinstance(out.conv, SVDConv2d)
    x = torch.randn(2, 12, 9, 9)
    assert_close(out(x), conv(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_svd_linear_full_rank_is_exact(bias):
    lin = nn.Linear(24, 10, bias=bias)
    out = haloc.decompose(Net(lin), {"conv": 10})
    assert isinstance(out.conv, SVDLinear)
    x = torch.randn(3, 24)
    assert_close(out(x), lin(x), rtol=1e-4, atol=1e-5)


def test_rank_pair_and_truncation_error_decreases():
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=False)
    errs = []
    for r in (4, 8, 16, 24):
        layer = Tucker2Conv.from_conv(conv, r)
        assert layer.rank == (min(r, 16), min(r, 24))
        errs.append((reconstruct(layer) - conv.weight).norm().item())
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4
    assert Tucker2Conv.from_conv(conv, (5, 7)).rank == (5, 7)


def reconstruct(layer: Tucker2Conv) -> torch.Tensor:
    u_in = layer.first.weight[:, :, 0, 0]  # (r_in, C_in)
    u_out = layer.last.weight[:, :, 0, 0]  # (C_out, r_out)
    return torch.einsum("rskl,or,si->oikl", layer.core.weight, u_out, u_in)


def test_hooi_matches_tensorly_partial_tucker():
    """Our HOOI reaches the reconstruction error of tensorly's partial Tucker (an independent implementation)."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    tl.set_backend("pytorch")
    w = torch.randn(32, 24, 3, 3, dtype=torch.float64)
    u_out, core, u_in = tucker2_factors(w, 10, 8, hooi_iters=10)
    ours = (torch.einsum("rskl,or,is->oikl", core, u_out, u_in) - w).norm()
    hosvd = tucker2_factors(w, 10, 8, hooi_iters=0)
    hosvd_err = (torch.einsum("rskl,or,is->oikl", hosvd[1], hosvd[0], hosvd[2]) - w).norm()
    (tl_core, tl_factors), _ = partial_tucker(w, rank=[10, 8], modes=[0, 1], n_iter_max=50, init="svd")
    ref = (tl.tenalg.multi_mode_dot(tl_core, tl_factors, modes=[0, 1]) - w).norm()
    assert ours <= hosvd_err + 1e-9
    assert ours <= ref * 1.01


def test_decompose_resnet20_keeps_original_and_names():
    model = haloc.models.create("resnet20").eval()
    before = copy.deepcopy(model.state_dict())
    out = haloc.decompose(model, {"layer1.0.conv1": 4, "layer3.2.conv2": [8, 16], "fc": 5})
    assert isinstance(out.layer1[0].conv1, Tucker2Conv) and out.layer3[2].conv2.rank == (8, 16)
    assert isinstance(out.fc, SVDLinear)
    assert isinstance(model.layer1[0].conv1, nn.Conv2d)  # input untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert "first" in dict(out.named_modules())["layer1.0.conv1"]._modules


def test_grouped_and_stem_layers_are_excluded_with_reason():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3))
    specs, excluded = haloc.decomposable_layers(net), haloc.excluded_layers(net)
    assert list(specs) == ["2"]
    assert "stem" in excluded["0"] and "groups=8" in excluded["1"]
    with pytest.raises(ValueError, match=r"'1' cannot be decomposed.*groups=8"):
        haloc.decompose(net, {"1": 4})


@pytest.mark.parametrize("ranks,match", [
    ({"layer9.conv": 4}, r"unknown layer 'layer9.conv'"),
    ({"layer1.0.conv1": 0}, r"'layer1.0.conv1'.*allowed ranks are 1..16"),
    ({"layer1.0.conv1": 17}, r"'layer1.0.conv1'.*allowed ranks are 1..16"),
    ({"layer1.0.conv1": 2.5}, r"'layer1.0.conv1'.*must be an int"),
    ({"layer1.0.conv1": True}, r"'layer1.0.conv1'.*must be an int"),
    ({"layer2.0.conv1": [17, 4]}, r"'layer2.0.conv1'.*r_in must lie in \[1, 16\]"),
    ({"fc": [4, 4]}, r"'fc'.*must be an int"),
    ({"conv1": 2}, r"'conv1' cannot be decomposed.*stem"),
])
def test_bad_ranks_raise_value_error_and_change_nothing(ranks, match):
    model = haloc.models.create("resnet20")
    good = {"layer1.1.conv1": 4}
    with pytest.raises(ValueError, match=match):
        haloc.decompose(model, {**good, **ranks}, inplace=True)
    assert isinstance(model.layer1[1].conv1, nn.Conv2d)  # validated before anything changed


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match=r"unknown model 'resnet99'.*resnet20"):
        haloc.models.create("resnet99")


def test_layer_input_sizes_are_traced():
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model, torch.randn(1, 3, 32, 32))
    assert specs["layer1.0.conv1"].input_hw == (32, 32)
    assert specs["layer3.0.conv1"].input_hw == (16, 16) and specs["layer3.0.conv1"].stride == (2, 2)
    assert specs["fc"].input_hw is None
