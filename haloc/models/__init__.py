"""Model registry: every network the project compresses is created through `create(name)`.

Names are stable because the ranks JSON is keyed by `named_modules()` names of these models.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch.nn as nn

from ..errors import BadInputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZE: dict[str, tuple[int, int, int]] = {}
_NUM_CLASSES: dict[str, int] = {}


def register_model(name: str, input_size: tuple[int, int, int], num_classes: int):
    """Decorator: register a model factory under `name`; duplicate names are refused."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise BadInputError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        _INPUT_SIZE[name] = input_size
        _NUM_CLASSES[name] = num_classes
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise BadInputError(f"unknown model {name!r}; choose one of {list_models()}")


def create(name: str, num_classes: int | None = None, weights: str | None = None, **kwargs) -> nn.Module:
    """Build model `name`; `weights` is a local file, an `s3://` URI or `torchvision` (see weights.py)."""
    _check(name)
    model = _REGISTRY[name](num_classes=num_classes or _NUM_CLASSES[name], **kwargs)
    if weights:
        from .weights import load_weights

        load_weights(model, name, weights)
    return model


def input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) of one input sample of model `name`."""
    _check(name)
    return _INPUT_SIZE[name]


def num_classes(name: str) -> int:
    _check(name)
    return _NUM_CLASSES[name]


def layer_specs(name: str, num_classes: int | None = None) -> dict:
    """Decomposable layers of model `name` (haloc.decomposable_layers), traced at its input size so
    that every conv knows the size of its input. The layer geometry does not depend on the weights."""
    _check(name)
    return dict(_traced_specs(name, num_classes))


@functools.lru_cache(maxsize=16)
def _traced_specs(name: str, num_classes: int | None):
    import torch

    from ..decomposition import decomposable_layers

    model = create(name, num_classes=num_classes)
    return tuple(decomposable_layers(model, torch.zeros(1, *input_size(name))).items())  # (1, C, H, W)


# Importing the families registers them.
from . import cifar_resnet, cifar_vgg, imagenet_resnet  # noqa: E402,F401
