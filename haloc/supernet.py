"""The HALOC supernet: every decomposable layer holds all its candidate ranks at once.

Candidate i of a layer uses the first r_i components of shared factors (nested prefixes, HOSVD
order). Its output y_i mixes with weights m = Gumbel-softmax(alpha, tau). Because the factors are
shared and the layer is linear in its core, sum_i m_i * y_i is ONE forward at the largest rank with

    Tucker-2: core weight masked by  M[a, b] = S(max(a, b)),  S(k) = sum_{i: r_i > k} m_i
    SVD:      the rank channels scaled by S(j)

so a supernet step costs one forward of the largest candidate, not M forwards. Better still, the
factors between the input and the output are linear and bias-free, so the masked mixture is one
dense layer of the ORIGINAL shape whose weight is composed from the factors each step:

    Tucker-2: W = U_last (core * M) U_first    SVD: W = B diag(S) A

When that dense layer costs fewer multiply-adds than the three factors at the largest candidate
(always, when the largest candidate is max_rank, "not decomposed"), the supernet layer runs it:
a weight step then costs about one step of the original model.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decomposition import LayerSpec, build_layer, decomposable_layers, lut_rank
from .errors import BadInputError
from .layers import SVDConv2d, Tucker2Conv
from .rank_space import RankSpace

MIX_MODES = ("gumbel", "sample", "softmax", "argmax", "fixed")  # "sample": one candidate drawn from softmax(alpha)


def survival(weights: torch.Tensor, ranks: torch.Tensor, length: int) -> torch.Tensor:
    """S(k) = sum_i weights_i * [k < ranks_i] for k in [0, length): (length,)."""
    k = torch.arange(length, device=weights.device)
    return ((k[:, None] < ranks[None, :]).to(weights.dtype) * weights[None, :]).sum(dim=1)


class SupernetLayer(nn.Module):
    """Shared factors at the largest candidate rank + architecture logits `alpha` (one per candidate)."""

    def __init__(self, factors: nn.Module, spec: LayerSpec, candidates: tuple[int, ...]):
        super().__init__()
        if candidates[-1] > spec.max_rank or candidates[0] < 1:
            raise BadInputError(f"layer {spec.name!r}: candidates {candidates} must lie in [1, {spec.max_rank}]")
        self.factors = factors  # Tucker2Conv / SVDConv2d / SVDLinear at the largest candidate
        self.spec = spec
        self.candidates = tuple(candidates)
        self.register_buffer("candidate_ranks", torch.tensor(candidates), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))  # uniform at start
        self.mode = "gumbel"
        self.tau = 1.0
        self.fixed_index = len(candidates) - 1  # the candidate of mode "fixed" (Supernet.fix)
        self.last_weights: torch.Tensor | None = None  # the m of the latest forward, for the cost terms
        self.dense = self._dense_is_cheaper()  # run the mixture as one layer of the original shape

    def mixing_weights(self) -> torch.Tensor:
        if self.mode == "gumbel":
            return F.gumbel_softmax(self.alpha, tau=self.tau, hard=False)
        if self.mode == "sample":  # a real architecture per forward (the weights train the candidate drawn)
            with torch.no_grad():
                index = int(torch.multinomial(F.softmax(self.alpha, 0), 1))
            return F.one_hot(torch.tensor(index, device=self.alpha.device), len(self.candidates)).to(self.alpha.dtype)
        if self.mode == "softmax":
            return F.softmax(self.alpha / self.tau, dim=0)
        if self.mode == "argmax":
            return F.one_hot(self.alpha.argmax(), len(self.candidates)).to(self.alpha.dtype)
        if self.mode == "fixed":
            return F.one_hot(torch.tensor(self.fixed_index, device=self.alpha.device),
                             len(self.candidates)).to(self.alpha.dtype)
        raise BadInputError(f"mix mode {self.mode!r} unknown; use one of {MIX_MODES}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mixing_weights()  # (M,)
        self.last_weights = m
        f = self.factors
        if isinstance(f, Tucker2Conv):
            r_in, r_out = f.rank
            s = survival(m, self.candidate_ranks, max(r_in, r_out))  # (R,)
            a = torch.arange(r_out, device=x.device)
            b = torch.arange(r_in, device=x.device)
            mask = s[torch.maximum(a[:, None], b[None, :])]  # (r_out, r_in)
            core = f.core
            masked = core.weight * mask[:, :, None, None]  # (r_out, r_in, K, K)
            if self.dense:
                weight = torch.einsum("or,rskl,si->oikl", f.last.weight[:, :, 0, 0], masked,
                                      f.first.weight[:, :, 0, 0])  # (C_out, C_in, K, K)
                return F.conv2d(x, weight, f.last.bias, core.stride, core.padding, core.dilation)
            z = F.conv2d(f.first(x), masked, None, core.stride, core.padding, core.dilation)  # (N, r_out, H', W')
            return f.last(z)
        s = survival(m, self.candidate_ranks, f.rank)  # (R,)
        if self.dense:
            weight = (f.last.weight.flatten(1) * s) @ f.first.weight.flatten(1)  # (out, in)
            if isinstance(f, SVDConv2d):
                return F.conv2d(x, weight[:, :, None, None], f.last.bias, f.first.stride, f.first.padding)
            return F.linear(x, weight, f.last.bias)
        z = f.first(x)  # (N, R, H, W) or (..., R)
        z = z * (s[:, None, None] if isinstance(f, SVDConv2d) else s)
        return f.last(z)

    def _dense_is_cheaper(self) -> bool:
        """Multiply-adds per output position: one dense layer against the factors at the largest rank."""
        spec = self.spec
        k = spec.kernel_size[0] * spec.kernel_size[1]
        dense = spec.in_channels * spec.out_channels * k
        if isinstance(self.factors, Tucker2Conv):
            r_in, r_out = self.factors.rank
            factored = spec.in_channels * r_in + r_in * r_out * k + r_out * spec.out_channels
        else:
            factored = self.factors.rank * (spec.in_channels + spec.out_channels)
        return dense <= factored

    def extra_repr(self) -> str:
        return f"candidates={list(self.candidates)}, mode={self.mode}"


class Supernet(nn.Module):
    """A copy of `model` whose decomposable layers (those in `rank_space`) are `SupernetLayer`s."""

    def __init__(self, model: nn.Module, rank_space: RankSpace, specs: dict[str, LayerSpec] | None = None,
                 hooi_iters: int = 0):
        super().__init__()
        specs = specs or decomposable_layers(model)
        unknown = [n for n in rank_space.candidates if n not in specs]
        if unknown:
            raise BadInputError(f"rank space names layers that are not decomposable in this model: {unknown[:5]}")
        self.net = copy.deepcopy(model)
        modules = dict(self.net.named_modules())
        self.layer_names: list[str] = []
        for name, cands in rank_space.candidates.items():
            spec = specs[name]
            # Prefix truncations of HOSVD factors are the nested candidates; HOOI refines only the largest.
            factors = build_layer(spec, cands[-1], source=modules[name], hooi_iters=hooi_iters)
            self.net.set_submodule(name, SupernetLayer(factors, spec, cands))
            self.layer_names.append(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def layers(self) -> dict[str, SupernetLayer]:
        modules = dict(self.net.named_modules())
        return {n: modules[n] for n in self.layer_names}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.layers().values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_mix(self, mode: str | None = None, tau: float | None = None) -> None:
        if mode is not None and mode not in MIX_MODES:
            raise BadInputError(f"mix mode {mode!r} unknown; use one of {MIX_MODES}")
        for layer in self.layers().values():
            if mode is not None:
                layer.mode = mode
            if tau is not None:
                layer.tau = float(tau)

    def fix(self, ranks: dict[str, int]) -> None:
        """Run one discrete architecture (mode "fixed"): each layer at its rank in `ranks`."""
        for name, layer in self.layers().items():
            if ranks[name] not in layer.candidates:
                raise BadInputError(f"layer {name!r}: rank {ranks[name]} is not a candidate {layer.candidates}")
            layer.fixed_index = layer.candidates.index(ranks[name])
            layer.mode = "fixed"

    def probabilities(self) -> dict[str, list[float]]:
        return {n: F.softmax(layer.alpha.detach(), 0).tolist() for n, layer in self.layers().items()}

    def argmax_ranks(self) -> dict[str, int]:
        """Every layer's most likely candidate (max_rank included: 'not decomposed')."""
        return {n: layer.candidates[int(layer.alpha.argmax())] for n, layer in self.layers().items()}


    @torch.no_grad()
    def extract(self, ranks: dict[str, int]) -> nn.Module:
        """The discrete model at `ranks` {layer: candidate rank} with the supernet's trained weights.

        A layer at rank r < max_rank becomes a Tucker2Conv / SVDConv2d / SVDLinear holding the first r
        components of the shared factors (exactly the supernet's output with all weight on that
        candidate); a layer at max_rank becomes the original layer type again, its weight composed
        from the factors. Everything else (BatchNorm, stem, classifier) is copied. BatchNorm
        statistics are the supernet's (of the mixture): re-estimate them before evaluating.
        """
        layers = self.layers()
        unknown = sorted(set(ranks) - set(layers))
        if unknown:
            raise BadInputError(f"ranks name layers that are not in the supernet: {unknown[:5]}")
        bad = [(n, r) for n, r in ranks.items() if r not in layers[n].candidates]
        if bad:
            n, r = bad[0]
            raise BadInputError(f"layer {n!r}: rank {r} is not a candidate; choose one of {layers[n].candidates}")
        stash = {n: layer.last_weights for n, layer in layers.items()}
        for layer in layers.values():
            layer.last_weights = None  # may be a non-leaf tensor of the last step: not deep-copyable
        try:
            net = copy.deepcopy(self.net)
        finally:
            for n, layer in layers.items():
                layer.last_weights = stash[n]
        modules = dict(net.named_modules())
        for name, layer in ((n, modules[n]) for n in self.layer_names):
            rank = ranks.get(name, layer.candidates[-1])
            net.set_submodule(name, _discrete_layer(layer, rank))
        return net


def _discrete_layer(layer: SupernetLayer, rank: int) -> nn.Module:
    spec, f = layer.spec, layer.factors
    whole = rank >= spec.max_rank
    out = build_layer(spec, lut_rank(spec, rank)).to(f.last.weight.device)  # fresh, filled below
    if isinstance(f, Tucker2Conv):
        r_in, r_out = (f.rank if whole else (min(rank, f.rank[0]), min(rank, f.rank[1])))
        first = f.first.weight[:r_in]  # (r_in, C_in, 1, 1)
        core = f.core.weight[:r_out, :r_in]  # (r_out, r_in, K, K)
        last = f.last.weight[:, :r_out]  # (C_out, r_out, 1, 1)
        if whole:
            out.weight.copy_(torch.einsum("or,rskl,si->oikl", last[:, :, 0, 0], core, first[:, :, 0, 0]))
        else:
            out.first.weight.copy_(first)
            out.core.weight.copy_(core)
            out.last.weight.copy_(last)
    else:
        r = f.rank if whole else rank
        first, last = f.first.weight[:r], f.last.weight[:, :r]  # (r, in[, 1, 1]), (out, r[, 1, 1])
        if whole:
            dense = last.flatten(1) @ first.flatten(1)  # (out, in)
            out.weight.copy_(dense.reshape(out.weight.shape))
        else:
            out.first.weight.copy_(first)
            out.last.weight.copy_(last)
    if f.last.bias is not None:
        (out.bias if whole else out.last.bias).copy_(f.last.bias)
    return out
