"""HALOC: hardware-aware automatic low-rank compression, in pure PyTorch (no Ray).

    import haloc
    model = haloc.models.create("resnet20")
    specs = haloc.decomposable_layers(model)
    small = haloc.decompose(model, {"layer1.0.conv1": 8})
"""
from . import models
from .cost import flops, params
from .decompose import LayerSpec, check_ranks, decompose, decomposable_layers, excluded_layers
from .errors import BadInputError
from .layers import SVDConv2d, SVDLinear, Tucker2Conv

__all__ = [
    "BadInputError", "LayerSpec", "SVDConv2d", "SVDLinear", "Tucker2Conv", "check_ranks", "decompose",
    "decomposable_layers", "excluded_layers", "flops", "models", "params",
]
