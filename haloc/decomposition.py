"""Which layers can be decomposed, their rank limits, and `decompose(model, ranks)`."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .errors import BadInputError
from .layers import SVDConv2d, SVDLinear, Tucker2Conv, split_rank

Rank = int | tuple[int, int]

# Layers with fewer input channels than this are stems: nothing to gain from a factorisation.
MIN_IN_CHANNELS = 4


@dataclass(frozen=True)
class LayerSpec:
    """Geometry of one decomposable layer, as read off the module (and its input, when traced)."""

    name: str
    kind: str  # "tucker2" (KxK conv) or "svd" (1x1 conv, Linear)
    op: str  # "conv2d" or "linear"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    bias: bool = False
    input_hw: tuple[int, int] | None = None  # spatial size of the layer's input; None until traced

    @property
    def max_rank(self) -> int:
        """Smallest rank at which the decomposition is exact."""
        if self.kind == "tucker2":
            return max(self.in_channels, self.out_channels)
        return min(self.in_channels, self.out_channels)

    def rank_pair(self, rank: Rank) -> tuple[int, int]:
        """(r_in, r_out) of `rank` for this layer (an SVD rank is the same on both sides)."""
        if self.kind == "svd":
            return int(rank), int(rank)
        return split_rank(rank, self.in_channels, self.out_channels)

    def check_rank(self, rank) -> Rank:
        """`rank` normalised (int, or (r_in, r_out) for Tucker-2); ValueError naming the allowed range."""
        if isinstance(rank, (list, tuple)) and self.kind == "tucker2":
            if len(rank) != 2 or not all(_is_int(r) for r in rank):
                raise BadInputError(f"layer {self.name!r}: rank {rank!r} must be an int or a pair [r_in, r_out]")
            r_in, r_out = int(rank[0]), int(rank[1])
            if not (1 <= r_in <= self.in_channels and 1 <= r_out <= self.out_channels):
                raise BadInputError(f"layer {self.name!r}: rank pair {rank!r} out of range; r_in must lie in "
                                 f"[1, {self.in_channels}] and r_out in [1, {self.out_channels}]")
            return (r_in, r_out)
        if not _is_int(rank):
            allowed = "an int or a pair [r_in, r_out]" if self.kind == "tucker2" else "an int"
            raise BadInputError(f"layer {self.name!r}: rank {rank!r} must be {allowed} in [1, {self.max_rank}]")
        if not 1 <= int(rank) <= self.max_rank:
            raise BadInputError(f"layer {self.name!r}: rank {rank} out of range; allowed ranks are 1..{self.max_rank}")
        return int(rank)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _scan(model: nn.Module) -> tuple[dict[str, LayerSpec], dict[str, str]]:
    specs: dict[str, LayerSpec] = {}
    excluded: dict[str, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                excluded[name] = f"grouped/depthwise conv (groups={m.groups}): no channel modes to factor"
            elif m.padding_mode != "zeros":
                excluded[name] = f"padding_mode={m.padding_mode!r}: only zero padding commutes with the 1x1 factor"
            elif isinstance(m.padding, str):
                excluded[name] = f"padding={m.padding!r}: give explicit padding to decompose this layer"
            elif m.in_channels < MIN_IN_CHANNELS:
                excluded[name] = f"stem with {m.in_channels} input channels: a factorisation saves nothing"
            else:
                kind = "svd" if tuple(m.kernel_size) == (1, 1) else "tucker2"
                specs[name] = LayerSpec(name, kind, "conv2d", m.in_channels, m.out_channels, tuple(m.kernel_size),
                                        tuple(m.stride), tuple(m.padding), tuple(m.dilation), m.bias is not None)
        elif isinstance(m, nn.Linear):
            if m.in_features < MIN_IN_CHANNELS:
                excluded[name] = f"linear layer with {m.in_features} inputs: a factorisation saves nothing"
            else:
                specs[name] = LayerSpec(name, "svd", "linear", m.in_features, m.out_features, bias=m.bias is not None)
    return specs, excluded


def decomposable_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, LayerSpec]:
    """Every decomposable layer by `named_modules()` name; with `example_input`, input sizes filled in."""
    specs, _ = _scan(model)
    if example_input is None:
        return specs
    shapes = layer_input_shapes(model, example_input, list(specs))
    return {n: replace(s, input_hw=tuple(shapes[n][-2:]) if s.op == "conv2d" else None) for n, s in specs.items()}


def excluded_layers(model: nn.Module) -> dict[str, str]:
    """Conv/Linear layers that are not decomposed, with the reason for each."""
    return _scan(model)[1]


@torch.no_grad()
def layer_input_shapes(model: nn.Module, example_input: torch.Tensor, names: list[str]) -> dict[str, tuple]:
    """Shape of the input each named module sees in one forward of `example_input`."""
    shapes: dict[str, tuple] = {}
    modules = dict(model.named_modules())

    def recorder(name):
        def hook(_module, args):
            shapes.setdefault(name, tuple(args[0].shape))  # first call wins; returns None: args unchanged
        return hook

    hooks = [modules[n].register_forward_pre_hook(recorder(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def check_ranks(model: nn.Module, ranks: dict) -> dict[str, Rank]:
    """Validate a {layer name: rank} dict against `model`; returns it normalised."""
    if not isinstance(ranks, dict):
        raise BadInputError(f"ranks must be a dict {{layer name: rank}}, got {type(ranks).__name__}")
    specs, excluded = _scan(model)
    checked: dict[str, Rank] = {}
    for name, rank in ranks.items():
        if name in excluded:
            raise BadInputError(f"layer {name!r} cannot be decomposed: {excluded[name]}")
        if name not in specs:
            known = list(specs)
            raise BadInputError(f"unknown layer {name!r}; decomposable layers are {known[:8]}"
                             f"{' ...' if len(known) > 8 else ''} ({len(known)} in all)")
        checked[name] = specs[name].check_rank(rank)
    return checked


def decompose(model: nn.Module, ranks: dict, inplace: bool = False, hooi_iters: int = 0) -> nn.Module:
    """Replace each layer named in `ranks` by its low-rank factors, initialised from its weights.

    KxK convs become `Tucker2Conv`, 1x1 convs `SVDConv2d`, Linear `SVDLinear`. Layers absent from
    `ranks` stay as they are. All ranks are validated before anything changes; the input model is
    left untouched unless `inplace=True`. Factors inherit the replaced layer's `requires_grad`, as
    the copied layers keep theirs.
    """
    checked = check_ranks(model, ranks)
    target = model if inplace else copy.deepcopy(model)
    modules = dict(target.named_modules())
    for name, rank in checked.items():
        factors = low_rank_module(modules[name], rank, hooi_iters)
        factors.requires_grad_(modules[name].weight.requires_grad)  # frozen stays frozen, trainable trainable
        target.set_submodule(name, factors)
    return target


def low_rank_module(module: nn.Module, rank: Rank, hooi_iters: int = 0) -> nn.Module:
    """The low-rank replacement of one Conv2d/Linear (rank already validated)."""
    if isinstance(module, nn.Linear):
        return SVDLinear.from_linear(module, int(rank))
    if tuple(module.kernel_size) == (1, 1):
        return SVDConv2d.from_conv(module, int(rank))
    return Tucker2Conv.from_conv(module, rank, hooi_iters)
