"""The HALOC supernet: every decomposable layer holds all its candidate ranks at once.

Candidate i of a layer uses the first r_i components of shared factors (nested prefixes, HOSVD
order). Its output y_i mixes with weights m = Gumbel-softmax(alpha, tau). Because the factors are
shared and the layer is linear in its core, sum_i m_i * y_i is ONE forward at the largest rank with

    Tucker-2: core weight masked by  M[a, b] = S(max(a, b)),  S(k) = sum_{i: r_i > k} m_i
    SVD:      the rank channels scaled by S(j)

so a supernet step costs one forward of the largest candidate, not M forwards.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decomposition import LayerSpec, build_layer, decomposable_layers
from .errors import BadInputError
from .layers import SVDConv2d, Tucker2Conv
from .rank_space import RankSpace

MIX_MODES = ("gumbel", "softmax", "argmax")


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
        self.last_weights: torch.Tensor | None = None  # the m of the latest forward, for the cost terms

    def mixing_weights(self) -> torch.Tensor:
        if self.mode == "gumbel":
            return F.gumbel_softmax(self.alpha, tau=self.tau, hard=False)
        if self.mode == "softmax":
            return F.softmax(self.alpha / self.tau, dim=0)
        if self.mode == "argmax":
            return F.one_hot(self.alpha.argmax(), len(self.candidates)).to(self.alpha.dtype)
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
            z = F.conv2d(f.first(x), core.weight * mask[:, :, None, None], None, core.stride, core.padding,
                         core.dilation)  # (N, r_out, H', W')
            return f.last(z)
        s = survival(m, self.candidate_ranks, f.rank)  # (R,)
        z = f.first(x)  # (N, R, H, W) or (..., R)
        z = z * (s[:, None, None] if isinstance(f, SVDConv2d) else s)
        return f.last(z)

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

    def probabilities(self) -> dict[str, list[float]]:
        return {n: F.softmax(l.alpha.detach(), 0).tolist() for n, l in self.layers().items()}

    def argmax_ranks(self) -> dict[str, int]:
        """Every layer's most likely candidate (max_rank included: 'not decomposed')."""
        return {n: l.candidates[int(l.alpha.argmax())] for n, l in self.layers().items()}
