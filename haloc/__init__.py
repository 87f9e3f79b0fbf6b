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

from ._version import __version__  # noqa: F401 - the package's version (pyproject.toml reads it too)

_LAZY = {
    "models": ("haloc.models", None),
    "flops": ("haloc.cost", "flops"),
    "params": ("haloc.cost", "params"),
    "LayerSpec": ("haloc.decomposition", "LayerSpec"),
    "check_ranks": ("haloc.decomposition", "check_ranks"),
    "build_layer": ("haloc.decomposition", "build_layer"),
    "KEEP_WHOLE": ("haloc.decomposition", "KEEP_WHOLE"),
    "decompose": ("haloc.decomposition", "decompose"),
    "decomposable_layers": ("haloc.decomposition", "decomposable_layers"),
    "excluded_layers": ("haloc.decomposition", "excluded_layers"),
    "BadInputError": ("haloc.errors", "BadInputError"),
    "Tucker2Conv": ("haloc.layers", "Tucker2Conv"),
    "SVDConv2d": ("haloc.layers", "SVDConv2d"),
    "SVDLinear": ("haloc.layers", "SVDLinear"),
    "RankSpace": ("haloc.rank_space", "RankSpace"),
    "build_rank_space": ("haloc.rank_space", "build_rank_space"),
    "Supernet": ("haloc.supernet", "Supernet"),
    "CostTable": ("haloc.hardware_loss", "CostTable"),
    "flops_cost_table": ("haloc.hardware_loss", "flops_cost_table"),
    "SearchConfig": ("haloc.search_loop", "SearchConfig"),
    "search_config": ("haloc.search_loop", "search_config"),
    "SEARCH_MODES": ("haloc.search_loop", "SEARCH_MODES"),
    "SupernetSearch": ("haloc.search_loop", "SupernetSearch"),
    "SearchResult": ("haloc.search_loop", "SearchResult"),
    "search": ("haloc.search_loop", "search"),
    "min_error_ranks": ("haloc.allocation", "min_error_ranks"),
    "DataConfig": ("haloc.data", "DataConfig"),
    "build_datasets": ("haloc.data", "build_datasets"),
    "demo_dataset": ("haloc.data", "demo_dataset"),
    "dataset_label": ("haloc.data", "dataset_label"),
    "split_train_heldout": ("haloc.data", "split_train_heldout"),
    "make_loader": ("haloc.data", "make_loader"),
    "seed_epoch": ("haloc.data", "seed_epoch"),
    "TrainConfig": ("haloc.train", "TrainConfig"),
    "TrainState": ("haloc.train", "TrainState"),
    "eval_mode": ("haloc.modes", "eval_mode"),
    "kd_loss": ("haloc.train", "kd_loss"),
    "evaluate": ("haloc.train", "evaluate"),
    "reestimate_batchnorm": ("haloc.train", "reestimate_batchnorm"),
    "RankSelection": ("haloc.baselines", "RankSelection"),
    "select_ranks": ("haloc.baselines", "select_ranks"),
    "digits_datasets": ("haloc.data", "digits_datasets"),
    "finetune": ("haloc.train", "finetune"),
    "rebuild": ("haloc.export", "rebuild"),
    "restore": ("haloc.export", "restore"),
    "onnx_metadata": ("haloc.export", "onnx_metadata"),
    "save_compressed": ("haloc.export", "save_compressed"),
    "load_compressed": ("haloc.export", "load_compressed"),
    "read_ranks_json": ("haloc.export", "read_ranks_json"),
    "export_onnx": ("haloc.export", "export_onnx"),
    "check_onnx": ("haloc.export", "check_onnx"),
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
