"""Which layers can be decomposed, their rank limits, the one rule for what a rank means, the one
factory of "a layer at a rank", and `decompose(model, ranks)`.

What "kept whole" (the layer runs as its original Conv2d / Linear) looks like at each step:

- ranks JSON and `decompose(model, ranks)`: a layer ABSENT from `ranks` is kept whole; a rank that is
  given is always decomposed (at `max_rank` the factors are exact, see LayerSpec.max_rank);
- the search (RankSpace candidates, SearchResult.all_ranks): every searched layer has a rank, and its
  `max_rank` stands for "kept whole" (the cost tables price it as the original layer);
- LUT rows and latency lookups: rank `KEEP_WHOLE` (0) is the original layer.

`to_ranks_json`, `from_ranks_json` and `lut_rank` translate between the three; nothing else does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .errors import BadInputError
from .layers import SVDConv2d, SVDLinear, Tucker2Conv, split_rank
from .modes import eval_mode

Rank = int | tuple[int, int]

# Layers with fewer input channels than this are stems: nothing to gain from a factorisation.
MIN_IN_CHANNELS = 4
# The rank of an original (undecomposed) layer in LUTs and latency lookups.
KEEP_WHOLE = 0


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
    try:
        with eval_mode(model):
            model(example_input)
    finally:
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
    specs = _scan(model)[0]
    target = model if inplace else copy.deepcopy(model)
    modules = dict(target.named_modules())
    for name, rank in checked.items():
        target.set_submodule(name, build_layer(specs[name], rank, source=modules[name], hooi_iters=hooi_iters))
        target.get_submodule(name).requires_grad_(modules[name].weight.requires_grad)  # frozen stays frozen
    return target


# ---- the rank rule -------------------------------------------------------------------------------------

def to_ranks_json(search_ranks: dict[str, Rank], specs: dict[str, LayerSpec]) -> dict[str, Rank]:
    """The ranks JSON of a searched architecture: layers at their max_rank are kept whole, so left out."""
    return {n: r for n, r in search_ranks.items() if _top(r) < specs[n].max_rank}


def from_ranks_json(ranks: dict[str, Rank], specs: dict[str, LayerSpec]) -> dict[str, Rank]:
    """Every layer of `specs` with its rank in the search's terms: absent from `ranks` -> max_rank."""
    return {n: ranks.get(n, s.max_rank) for n, s in specs.items()}


def lut_rank(spec: LayerSpec, rank: Rank | None) -> int:
    """The LUT row that prices `rank`: KEEP_WHOLE for an absent layer, rank 0 or a rank >= max_rank
    (the search's "kept whole"); else the rank. A Tucker-2 pair (r_in, r_out) is priced at its larger
    side: LUTs hold equal ranks only, and the larger rank bounds the pair's cost from above."""
    if rank is None:
        return KEEP_WHOLE
    r = _top(rank)
    return KEEP_WHOLE if r == KEEP_WHOLE or r >= spec.max_rank else r


def _top(rank: Rank) -> int:
    return max(int(x) for x in rank) if isinstance(rank, (list, tuple)) else int(rank)


# ---- the one factory of "a layer at a rank" -------------------------------------------------------------

def build_layer(spec: LayerSpec, rank: Rank, source: nn.Module | None = None, hooi_iters: int = 0) -> nn.Module:
    """Layer `spec` at `rank`: the supernet, the LUT's measured modules, the FLOPs counts, decompose
    and rebuild all build their layers here.

    rank KEEP_WHOLE (0): the original layer (a deep copy of `source`, or a fresh one with `spec`'s
    geometry). rank >= 1: `Tucker2Conv` (KxK conv), `SVDConv2d` (1x1 conv) or `SVDLinear`, fitted
    from `source`'s weights (HOSVD / SVD; `hooi_iters` HOOI refinements) or, without a source,
    randomly initialised (what is timed, counted or about to receive a state dict).
    """
    whole = not isinstance(rank, (list, tuple)) and int(rank) == KEEP_WHOLE
    if source is not None:
        if whole:
            return copy.deepcopy(source)
        if spec.op == "linear":
            return SVDLinear.from_linear(source, int(rank))
        if spec.kind == "svd":
            return SVDConv2d.from_conv(source, int(rank))
        return Tucker2Conv.from_conv(source, rank, hooi_iters)
    if spec.op == "linear":
        if whole:
            return nn.Linear(spec.in_channels, spec.out_channels, bias=spec.bias)
        return SVDLinear(spec.in_channels, spec.out_channels, int(rank), bias=spec.bias)
    if whole:
        return nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                         spec.dilation, bias=spec.bias)
    if spec.kind == "svd":
        return SVDConv2d(spec.in_channels, spec.out_channels, int(rank), spec.stride, spec.padding, bias=spec.bias)
    return Tucker2Conv(spec.in_channels, spec.out_channels, spec.kernel_size, rank, spec.stride, spec.padding,
                       spec.dilation, bias=spec.bias)
