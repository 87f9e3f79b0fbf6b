"""HALOC: hardware-aware automatic low-rank compression, in pure PyTorch (no Ray).

    import haloc
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    small = haloc.decompose(model, {"layer1.0.conv1": 8})

Attributes load lazily, so `from haloc.errors import BadInputError` does not import torch
(the CLIs and the store stay quick to start).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "models": ("haloc.models", None),
    "flops": ("haloc.cost", "flops"),
    "params": ("haloc.cost", "params"),
    "LayerSpec": ("haloc.decompose", "LayerSpec"),
    "check_ranks": ("haloc.decompose", "check_ranks"),
    "decompose": ("haloc.decompose", "decompose"),
    "decomposable_layers": ("haloc.decompose", "decomposable_layers"),
    "excluded_layers": ("haloc.decompose", "excluded_layers"),
    "BadInputError": ("haloc.errors", "BadInputError"),
    "Tucker2Conv": ("haloc.layers", "Tucker2Conv"),
    "SVDConv2d": ("haloc.layers", "SVDConv2d"),
    "SVDLinear": ("haloc.layers", "SVDLinear"),
    "RankSpace": ("haloc.rank_space", "RankSpace"),
    "build_rank_space": ("haloc.rank_space", "build_rank_space"),
    "Supernet": ("haloc.supernet", "Supernet"),
    "CostTable": ("haloc.hardware_loss", "CostTable"),
    "flops_cost_table": ("haloc.hardware_loss", "flops_cost_table"),
    "SearchConfig": ("haloc.search", "SearchConfig"),
    "SupernetSearch": ("haloc.search", "SupernetSearch"),
    "SearchResult": ("haloc.search", "SearchResult"),
    "search": ("haloc.search", "search"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'haloc' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
