"""Model registry: every network the project compresses is created through `create(name)`.

Names are stable because the ranks JSON is keyed by `named_modules()` names of these models.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from ..errors import BadInputError, param

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
    return sorted(n for n in _REGISTRY if ":" not in n)


TORCHVISION_PREFIX = "torchvision:"
MODEL_FORMS = ("a registry name", "torchvision:NAME (any torchvision classification model)",
               "package.module:factory (a callable returning an nn.Module)")


def _check(name: str) -> None:
    if name in _REGISTRY:
        return
    if isinstance(name, str) and ":" in name:
        _register_external(name)
        return
    raise BadInputError(f"unknown model {name!r}; choose one of {list_models()}, or give torchvision:NAME or "
                        "package.module:factory")


def _register_external(name: str) -> None:
    """Register `torchvision:NAME` or `package.module:factory` under its own name, on first use (in every
    process that meets it: a Ray worker resolves it again, so the factory must be importable there)."""
    import importlib
    import inspect

    where, _, attr = name.partition(":")
    if where == "torchvision":
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)
        if attr not in known:
            raise BadInputError(f"model {name!r}: torchvision has no classification model {attr!r}; choose one "
                                f"of {known[:12]}... (torchvision.models.list_models())")

        def factory(num_classes: int, **kwargs) -> nn.Module:
            return tvm.get_model(attr, weights=None, num_classes=num_classes, **kwargs)

        _REGISTRY[name], _INPUT_SIZE[name], _NUM_CLASSES[name] = factory, (3, 224, 224), 1000
        return
    try:
        fn = getattr(importlib.import_module(where), attr)
    except ImportError as e:
        raise BadInputError(f"model {name!r}: module {where!r} cannot be imported ({e}); install it, put its folder "
                            f"on PYTHONPATH, or pass {param('py_modules', 'FOLDER')} so that every node of the run "
                            "gets it") from e
    except AttributeError as e:
        raise BadInputError(f"model {name!r}: module {where!r} has no {attr!r}; name a callable that returns an "
                            "nn.Module") from e
    if not callable(fn):
        raise BadInputError(f"model {name!r}: {attr!r} is a {type(fn).__name__}, not a callable returning an nn.Module")
    params = inspect.signature(fn).parameters
    takes_classes = "num_classes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def factory(num_classes: int | None = None, **kwargs) -> nn.Module:
        model = fn(num_classes=num_classes, **kwargs) if takes_classes and num_classes is not None else fn(**kwargs)
        if not isinstance(model, nn.Module):
            raise BadInputError(f"model {name!r}: the factory returned a {type(model).__name__}, not an nn.Module")
        return model

    size = getattr(fn, "input_size", None)  # a factory may say its input size (C, H, W); else image_size
    classes = getattr(fn, "num_classes", None)
    if classes is None:
        classes = _head_size(factory())
    _REGISTRY[name], _NUM_CLASSES[name] = factory, classes
    if size is not None:
        _INPUT_SIZE[name] = tuple(int(v) for v in size)


def _head_size(model: nn.Module) -> int | None:
    """The out_features of the model's last Linear layer (its class count, for a classifier)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def create(name: str, num_classes: int | None = None, weights: str | None = None, **kwargs) -> nn.Module:
    """Build model `name` (any of MODEL_FORMS); `weights` is a local file, an `s3://` URI or `torchvision`
    (see weights.py)."""
    _check(name)
    model = _REGISTRY[name](num_classes=num_classes or _NUM_CLASSES[name], **kwargs)
    if num_classes and ":" in name and _head_size(model) not in (None, num_classes):
        raise BadInputError(f"model {name!r} has a {_head_size(model)}-class head, but {num_classes} classes are "
                            "needed; let the factory take num_classes, or pass "
                            f"{param('num_classes', str(_head_size(model)))}")
    if weights:
        from .weights import load_weights

        load_weights(model, name, weights)
    return model


def input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) of one input sample of model `name`."""
    _check(name)
    if name not in _INPUT_SIZE:
        raise BadInputError(f"model {name!r} does not say its input size; pass {param('image_size', 'S')} (an S x S "
                            f"RGB input, e.g. {param('image_size', '32')}), or give the factory an `input_size` "
                            "attribute (C, H, W)")
    return _INPUT_SIZE[name]


def num_classes(name: str) -> int:
    _check(name)
    if _NUM_CLASSES[name] is None:
        raise BadInputError(f"model {name!r} has no Linear head to read its class count from; pass "
                            f"{param('num_classes', 'N')}")
    return _NUM_CLASSES[name]


@dataclass(frozen=True)
class ModelSpec:
    """What a run compresses: a model of the registry, with its class count and input size.

    A compressed architecture is this plus ranks; every stage and worker rebuilds the model from it,
    so the input size the LUT was traced at is the one the model runs at.
    """

    name: str
    num_classes: int | None = None  # None: the registry's default for `name`
    input_size: tuple[int, int, int] | None = None  # (C, H, W); None: the registry's

    def __post_init__(self):
        _check(self.name)
        if self.input_size is not None:
            size = tuple(int(v) for v in self.input_size)
            if len(size) != 3 or min(size) < 1:
                raise BadInputError(f"model {self.name!r}: input size {self.input_size!r} must be (C, H, W) "
                                    "of positive integers, e.g. (3, 32, 32)")
            object.__setattr__(self, "input_size", size)

    @classmethod
    def of(cls, model) -> ModelSpec:
        """A ModelSpec from a registry name, its dict form, or itself."""
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, str):
            return cls(model)
        if isinstance(model, dict):
            return cls(model["name"], model.get("num_classes"), model.get("input_size"))
        raise BadInputError(f"a model is a registry name or a ModelSpec, got {type(model).__name__}")

    @property
    def size(self) -> tuple[int, int, int]:
        """(C, H, W) of one input sample."""
        return self.input_size or input_size(self.name)

    @property
    def classes(self) -> int:
        return self.num_classes or num_classes(self.name)

    def create(self, weights: str | None = None) -> nn.Module:
        return create(self.name, num_classes=self.num_classes, weights=weights)

    def example(self, batch: int = 1):
        import torch

        return torch.zeros(batch, *self.size)  # (N, C, H, W)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes,
                "input_size": list(self.input_size) if self.input_size else None}


def layer_specs(model, num_classes: int | None = None) -> dict:
    """Decomposable layers of `model` (a registry name or a ModelSpec; haloc.decomposable_layers),
    traced at its input size so that every conv knows the size of its input. The layer geometry
    does not depend on the weights."""
    spec = ModelSpec.of(model)
    if num_classes is not None:
        spec = ModelSpec(spec.name, num_classes, spec.input_size)
    return dict(_traced_specs(spec))


@functools.lru_cache(maxsize=16)
def _traced_specs(spec: ModelSpec):
    from ..decomposition import decomposable_layers

    return tuple(decomposable_layers(spec.create(), spec.example()).items())


# Importing the families registers them.
from . import cifar_resnet, cifar_vgg, imagenet_resnet  # noqa: E402,F401
