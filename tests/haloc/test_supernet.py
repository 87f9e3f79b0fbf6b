import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.testing import assert_close

import haloc
from haloc.layers import Tucker2Conv
from haloc.rank_space import RankSpace
from haloc.supernet import Supernet


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=True)
        self.pw = nn.Conv2d(12, 10, 1, bias=False)
        self.fc = nn.Linear(10, 6)

    def forward(self, x):
        return self.fc(self.pw(self.conv(x)).mean((2, 3)))


SPACE = RankSpace({"conv": (3, 8, 12), "pw": (2, 5, 10), "fc": (1, 4, 6)})
# largest candidates well below max_rank: the factors are cheaper than one dense layer
SMALL = RankSpace({"conv": (1, 2, 3), "pw": (1, 2, 3), "fc": (1, 2)})


def candidate_outputs(layer, x):
    """Each candidate's own output, from explicit prefix slices of the shared factors."""
    f, outs = layer.factors, []
    for r in layer.candidates:
        if isinstance(f, Tucker2Conv):
            r_in, r_out = min(r, f.rank[0]), min(r, f.rank[1])
            z = F.conv2d(x, f.first.weight[:r_in])
            z = F.conv2d(z, f.core.weight[:r_out, :r_in], None, f.core.stride, f.core.padding)
            outs.append(F.conv2d(z, f.last.weight[:, :r_out], f.last.bias))
        elif isinstance(f.first, nn.Linear):
            outs.append(F.linear(F.linear(x, f.first.weight[:r]), f.last.weight[:, :r], f.last.bias))
        else:
            z = F.conv2d(x, f.first.weight[:r], None, f.first.stride, f.first.padding)
            outs.append(F.conv2d(z, f.last.weight[:, :r], f.last.bias))
    return outs


@pytest.mark.parametrize("space,dense", [(SPACE, True), (SMALL, False)])
@pytest.mark.parametrize("name,shape", [("conv", (2, 8, 9, 9)), ("pw", (2, 12, 5, 5)), ("fc", (3, 10))])
def test_masked_mixture_equals_weighted_sum_of_candidates(name, shape, space, dense):
    torch.manual_seed(1)
    net = Supernet(Two(), space)
    layer = net.layers()[name]
    assert layer.dense is dense  # the composed dense layer runs only where it is cheaper
    with torch.no_grad():
        layer.alpha.copy_(torch.randn(len(layer.candidates)))
    net.set_mix("softmax", tau=0.7)
    x = torch.randn(*shape)
    y = layer(x)
    m = F.softmax(layer.alpha / 0.7, 0)
    expected = sum(mi * yi for mi, yi in zip(m, candidate_outputs(layer, x)))
    assert_close(y, expected, rtol=1e-4, atol=1e-5)
    y.square().sum().backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.abs().sum() > 0


def test_gumbel_mixture_gradients_reach_every_alpha_and_largest_candidate_is_exact():
    torch.manual_seed(2)
    model = Two()
    net = Supernet(model, SPACE)
    x = torch.randn(4, 8, 9, 9)
    net.set_mix("gumbel", tau=1.0)
    net(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    # alpha strongly on the last candidate (max_rank) reproduces the original model
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.tensor([0.0, 0.0, 1.0]))
    net.set_mix("argmax")
    assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)
    assert net.argmax_ranks() == {"conv": 12, "pw": 10, "fc": 6}


def test_supernet_rejects_unknown_layers():
    with pytest.raises(ValueError, match="not decomposable"):
        Supernet(Two(), RankSpace({"nope": (1, 2)}))


def test_supernet_over_resnet20_runs_and_separates_parameters():
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    from haloc.rank_space import build_rank_space

    net = Supernet(model, build_rank_space(specs, "step", step=8), specs)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    arch = {id(p) for p in net.arch_parameters()}
    assert len(arch) == len(specs) and not arch & {id(p) for p in net.weight_parameters()}


@pytest.mark.parametrize("pick", [0, 1, -1])
def test_extract_equals_the_supernet_at_one_candidate(pick):
    """The discrete model taken out of a (trained) supernet computes what the supernet computes with
    all weight on those candidates; max_rank comes back as the original layer type."""
    torch.manual_seed(3)
    net = Supernet(Two(), SPACE)
    with torch.no_grad():  # move the shared factors away from their HOSVD start
        for p in net.weight_parameters():
            p.add_(0.05 * torch.randn_like(p))
    net(torch.randn(2, 8, 9, 9)).sum().backward()  # a training step leaves non-leaf mixing weights behind
    ranks = {n: layer.candidates[pick] for n, layer in net.layers().items()}
    for n, layer in net.layers().items():
        with torch.no_grad():
            layer.alpha.copy_(F.one_hot(torch.tensor(layer.candidates.index(ranks[n])), 3).float())
    net.set_mix("argmax")
    net.eval()
    small = net.extract(ranks).eval()
    x = torch.randn(2, 8, 9, 9)
    assert_close(small(x), net(x), rtol=1e-4, atol=1e-5)
    kinds = {n: type(m).__name__ for n, m in small.named_modules() if n in ranks}
    if pick == -1:
        assert kinds == {"conv": "Conv2d", "pw": "Conv2d", "fc": "Linear"}
    else:
        assert kinds == {"conv": "Tucker2Conv", "pw": "SVDConv2d", "fc": "SVDLinear"}
    with pytest.raises(ValueError, match="not a candidate"):
        net.extract({"conv": 5})


def test_reestimate_batchnorm_recovers_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    data = [(3.0 + 2.0 * torch.randn(16, 3, 5, 5), torch.zeros(16)) for _ in range(4)]
    model.eval()
    haloc.reestimate_batchnorm(model, data)
    assert not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x, _ in data])  # (64, 4, 5, 5)
    assert_close(model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert_close(model[1].running_var, feats.var((0, 2, 3)), rtol=0.05, atol=1e-3)


def test_sample_mode_runs_one_candidate_drawn_from_alpha():
    """mix "sample": each forward is exactly one candidate's output, drawn with softmax(alpha)."""
    torch.manual_seed(0)
    net = Supernet(Two(), SPACE)
    layer = net.layers()["conv"]
    with torch.no_grad():
        layer.alpha.copy_(torch.log(torch.tensor([0.2, 0.7, 0.1])))
    x = torch.randn(2, 8, 9, 9)
    outs = candidate_outputs(layer, x)
    net.set_mix("sample")
    counts = [0, 0, 0]
    for _ in range(300):
        y = layer(x)
        index = int(layer.last_weights.argmax())
        assert float(layer.last_weights.sum()) == 1.0 and float(layer.last_weights.max()) == 1.0
        assert_close(y, outs[index], rtol=1e-4, atol=1e-5)
        counts[index] += 1
    assert counts[1] > counts[0] > counts[2] > 0  # frequencies follow alpha
