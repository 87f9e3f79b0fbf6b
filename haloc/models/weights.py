"""Loading pretrained weights: a local file, an `s3://` URI, or torchvision's published weights.

Files are read with `torch.load(weights_only=True)`: nothing is unpickled beyond tensors.
"""
from __future__ import annotations

import io

import torch
import torch.nn as nn

from ..errors import BadInputError, param

_TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1"}


def read_bytes(uri: str) -> bytes:
    """Bytes of a local path or any URI pyarrow.fs understands (`s3://bucket/key?endpoint_override=...`)."""
    if "://" not in uri:
        with open(uri, "rb") as f:
            return f.read()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as f:
        return f.read()


def load_state_dict(source: str) -> dict[str, torch.Tensor]:
    """A state dict from a file or URI; checkpoints that wrap it under `state_dict` or `model` work too."""
    try:
        data = read_bytes(source)
    except (FileNotFoundError, OSError) as e:
        raise BadInputError(f"weights {source!r} cannot be read ({e}); pass an existing file or s3:// URI") from e
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or pickled-object files
        raise BadInputError(
            f"weights {source!r} are not a tensor-only PyTorch state dict ({type(e).__name__}); "
            "save them with torch.save(model.state_dict(), path)"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BadInputError(f"weights {source!r} hold a {type(obj).__name__}, not a state dict; "
                            "save them with torch.save(model.state_dict(), path)")
    return obj


def load_weights(model: nn.Module, name: str, source: str) -> nn.Module:
    """Load `source` into `model` (strict: every key must match)."""
    if source == "torchvision":
        state = _torchvision_state_dict(name)
    else:
        state = load_state_dict(source)
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and hasattr(tensor, "shape") and tuple(tensor.shape) != tuple(own[key].shape):
            raise BadInputError(
                f"weights {source!r} do not fit model {name!r}: {key!r} has shape {tuple(tensor.shape)} in the "
                f"weights and {tuple(own[key].shape)} in the model (another model, or another number of classes); "
                f"pass weights saved from this model, or set {param('num_classes')} to the weights' head")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInputError(
            f"weights {source!r} do not fit model {name!r}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}; pass weights saved from this model"
        )
    return model


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    import torchvision.models as tvm

    if name.startswith("torchvision:"):  # torchvision's own model: its default published weights
        weights = tvm.get_model_weights(name.split(":", 1)[1]).DEFAULT
    elif name not in _TORCHVISION_WEIGHTS:
        raise BadInputError(f"torchvision publishes no weights for {name!r}; known: {sorted(_TORCHVISION_WEIGHTS)} "
                            "and every torchvision:NAME model")
    else:
        enum_name, member = _TORCHVISION_WEIGHTS[name].split(".")
        weights = getattr(getattr(tvm, enum_name), member)
    try:
        # Reads from the torch hub cache ($TORCH_HOME) first; downloads only where a network is reachable.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:
        raise BadInputError(
            f"torchvision weights for {name!r} could not be loaded ({type(e).__name__}: {e}); without a "
            f"network, put {weights.url.rsplit('/', 1)[-1]} in $TORCH_HOME/hub/checkpoints or pass "
            f"{param('weights', 'FILE')}"
        ) from e
