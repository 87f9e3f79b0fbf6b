"""Compressed-model artifacts: `model.pt` + `ranks.json`, and ONNX export checked with onnxruntime.

A compressed architecture is data: the model name and its ranks. `load_compressed` rebuilds it with
`haloc.models.create(name)` + `haloc.decompose(model, ranks)` and loads the weights tensor-only
(`torch.load(weights_only=True)`), so an artifact never unpickles code.

ranks.json: `{"model": "resnet18", "ranks": {"layer1.0.conv1": 32, "layer2.0.conv1": [16, 32]}, "num_classes": 1000}`
(a Tucker-2 rank may be a pair [r_in, r_out]; a layer absent from "ranks" is uncompressed;
"num_classes" is optional and defaults to the registry's value for the model).

Your own model (not in the registry) works the same way: `save_compressed(small, "my-net", ranks, folder)`
records the ranks under your label, and `load_compressed(folder, model=MyNet())` decomposes your fresh
instance with them and loads the weights (docs/guide.md, "Using the core library without Ray").
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import models
from .decomposition import build_layer, check_ranks, decomposable_layers
from .errors import BadInputError
from .files import atomic_write
from .layers import SVDConv2d, SVDLinear, Tucker2Conv, split_rank
from .modes import eval_mode

WEIGHTS_FILE = "model.pt"
RANKS_FILE = "ranks.json"


@dataclass(frozen=True)
class RanksFile:
    """The parsed, validated content of a ranks JSON."""

    model: str
    ranks: dict  # {layer name: int or (r_in, r_out)}
    num_classes: int | None = None  # None: the registry's default for `model`
    input_size: tuple[int, int, int] | None = None  # (C, H, W) it was searched and measured at; None: the registry's

    def to_json(self) -> dict:
        ranks = {k: list(v) if isinstance(v, tuple) else v for k, v in self.ranks.items()}
        out = {"model": self.model, "ranks": ranks}
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        if self.input_size is not None:
            out["input_size"] = list(self.input_size)
        return out

    @property
    def model_spec(self) -> models.ModelSpec:
        return models.ModelSpec(self.model, self.num_classes, self.input_size)


def rebuild(model, ranks: dict, state: dict | None = None, num_classes: int | None = None) -> nn.Module:
    """The compressed architecture (a model name or ModelSpec + ranks JSON content) as a module, with
    `state` loaded.

    The one place a model is rebuilt from data: validation, measurement, exports and
    `load_compressed` call it. Factor layers are built with random weights (no HOSVD: `state`
    overwrites them); without `state` that random initialisation is what you get. A state that
    does not fit -> BadInputError.
    """
    spec = models.ModelSpec.of(model)
    return _decompose_and_load(models.create(spec.name, num_classes=num_classes or spec.num_classes), ranks, state,
                               repr(spec.name))


def restore(model: nn.Module, ranks: dict, state: dict | None = None, inplace: bool = False) -> nn.Module:
    """Your own module (as defined, not yet decomposed) with the layers named in `ranks` replaced by
    their factor layers and `state` (a compressed model's state dict) loaded.

    The factors are built empty (no HOSVD: the state overwrites them), so this is quick where
    `decompose(model, ranks)` + `load_state_dict` would first factor every layer's weights for nothing.
    `model` is left untouched unless `inplace=True`. Ranks that do not fit it, or a state that does
    not fit the result -> BadInputError."""
    target = model if inplace else copy.deepcopy(model)
    return _decompose_and_load(target, ranks, state, f"your {type(model).__name__}")


def _decompose_and_load(model: nn.Module, ranks: dict, state: dict | None, what: str) -> nn.Module:
    checked = check_ranks(model, ranks)
    specs = decomposable_layers(model)
    for name, rank in checked.items():
        model.set_submodule(name, build_layer(specs[name], rank))
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise BadInputError(f"weights do not fit {what} with ranks of {len(checked)} layers "
                                f"({str(e).splitlines()[0]} ...); pass the state dict saved with these ranks") from e
    return model


def _num_classes_of(model: nn.Module) -> int | None:
    """Output width of the last module that has one (the classifier, decomposed or not)."""
    last = None
    for m in model.modules():
        if isinstance(getattr(m, "out_features", None), int):
            last = m.out_features
    return last


def save_compressed(model: nn.Module, model_name, ranks: dict, folder: str | Path) -> dict[str, str]:
    """Write `folder/model.pt` (state dict) and `folder/ranks.json`, each atomically; returns their paths.

    `model_name` is the registry name, or a ModelSpec (its input size is then recorded too); `ranks`
    are then validated against a fresh registry model, so a saved artifact always reloads. Any other
    name labels your own model: the ranks are checked against the decomposed `model` itself (each
    named layer must be a factor layer of that rank), and `load_compressed(folder, model=...)`
    restores it onto your definition.
    """
    num_classes = _num_classes_of(model)
    if isinstance(model_name, str) and model_name not in models.list_models():
        spec = RanksFile(model_name, _ranks_of_decomposed(model, ranks), num_classes)
    else:
        given = models.ModelSpec.of(model_name)
        base = models.create(given.name, num_classes=num_classes)
        spec = RanksFile(given.name, check_ranks(base, ranks), num_classes, given.input_size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, ranks_path = folder / WEIGHTS_FILE, folder / RANKS_FILE
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: torch.save(state, tmp))
    atomic_write(ranks_path, json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n")
    return {"model": str(weights), "ranks": str(ranks_path)}


def _ranks_of_decomposed(model: nn.Module, ranks: dict) -> dict:
    """`ranks` normalised, checked against the factor layers of an already decomposed `model` (a model
    outside the registry has no undecomposed original here to check them against)."""
    if not isinstance(ranks, dict):
        raise BadInputError(f"ranks must be a dict {{layer name: rank}}, got {type(ranks).__name__}")
    fix = "pass the model haloc.decompose(model, ranks) returned, with those same ranks"
    out = {}
    for name, rank in ranks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise BadInputError(f"layer {name!r} is not in the model; {fix}") from None
        if not isinstance(layer, (Tucker2Conv, SVDConv2d, SVDLinear)):
            raise BadInputError(f"layer {name!r} is a {type(layer).__name__}, not a decomposed layer; {fix}")
        pair = isinstance(rank, (list, tuple)) and len(rank) == 2 and all(_is_int(r) for r in rank)
        if not (_is_int(rank) or (pair and isinstance(layer, Tucker2Conv))):
            raise BadInputError(f"layer {name!r}: rank {rank!r} must be an int"
                                + (" or a pair [r_in, r_out]" if isinstance(layer, Tucker2Conv) else ""))
        if isinstance(layer, Tucker2Conv):
            actual = split_rank(rank, layer.first.in_channels, layer.last.out_channels)
            rank = tuple(int(r) for r in rank) if pair else int(rank)
        else:
            actual = rank = int(rank)
        if actual != layer.rank:
            raise BadInputError(f"layer {name!r}: rank {rank!r} given, but the layer has rank {layer.rank}; {fix}")
        out[name] = rank
    return out


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_ranks_json(path: str | Path, expected_model: str | None = None, model: nn.Module | None = None) -> RanksFile:
    """Parse and validate a ranks JSON; BadInputError naming the file (and layer) on any problem.

    The ranks are checked against the registry model the file names, or against `model` (your own
    module, as defined, not yet decomposed) when given: its "model" may then be any label."""
    path = Path(path)
    fix = 'expected {"model": "<name>", "ranks": {"<layer>": <int or [r_in, r_out]>, ...}}'
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise BadInputError(f"ranks file {str(path)!r} does not exist; "
                            "pass the ranks.json of a compressed model") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"ranks file {str(path)!r} is not valid JSON ({e}); {fix}") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str) or not isinstance(obj.get("ranks"), dict):
        raise BadInputError(f"ranks file {str(path)!r} is malformed; {fix}")
    unknown = sorted(set(obj) - {"model", "ranks", "num_classes", "input_size"})
    if unknown:
        raise BadInputError(f"ranks file {str(path)!r} has unknown keys {unknown}; {fix}")
    name = obj["model"]
    if expected_model is not None and name != expected_model:
        raise BadInputError(f"ranks file {str(path)!r} is for model {name!r}, not {expected_model!r}; "
                            f"pass a ranks file made for {expected_model!r}")
    num_classes = obj.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 1):
        raise BadInputError(f"ranks file {str(path)!r}: num_classes={num_classes!r} must be a positive int")
    try:
        if model is None:
            ranks = check_ranks(models.create(name, num_classes=num_classes), obj["ranks"])
            size = models.ModelSpec(name, num_classes, obj.get("input_size")).input_size
        else:
            ranks = check_ranks(model, obj["ranks"])
            size = _input_size(obj.get("input_size"))
    except BadInputError as e:
        raise BadInputError(f"ranks file {str(path)!r}: {e.message}") from e
    return RanksFile(name, ranks, num_classes, size)


def _input_size(size) -> tuple[int, int, int] | None:
    if size is None:
        return None
    if not (isinstance(size, list) and len(size) == 3 and all(_is_int(v) and v >= 1 for v in size)):
        raise BadInputError(f"input_size {size!r} must be [C, H, W] of positive integers, e.g. [3, 32, 32]")
    return tuple(size)


def _artifact_paths(folder_or_files) -> tuple[Path, Path]:
    if isinstance(folder_or_files, (list, tuple)):
        if len(folder_or_files) != 2:
            raise BadInputError(f"expected (weights file, ranks file), got {folder_or_files!r}")
        a, b = (Path(p) for p in folder_or_files)
        return (b, a) if a.suffix == ".json" else (a, b)
    folder = Path(folder_or_files)
    if folder.is_file() and folder.suffix == ".json":  # the ranks file: weights lie beside it
        return folder.parent / WEIGHTS_FILE, folder
    if not folder.is_dir():
        raise BadInputError(f"compressed model folder {str(folder)!r} does not exist; "
                            f"pass a folder holding {WEIGHTS_FILE} and {RANKS_FILE} (from save_compressed)")
    return folder / WEIGHTS_FILE, folder / RANKS_FILE


def load_compressed(folder_or_files, expected_model: str | None = None, model: nn.Module | None = None,
                    inplace: bool = False) -> tuple[nn.Module, dict]:
    """(model in eval mode, ranks) from a save_compressed folder, its ranks.json, or (model.pt, ranks.json).

    Without `model` the architecture is rebuilt from the registry name in ranks.json. With `model`
    (your own module as you define it, e.g. `torchvision.models.resnet18(num_classes=10)`) the
    stored ranks are applied to it (haloc.export.restore: a copy, or `model` itself with
    `inplace=True`) and the stored weights loaded into the result."""
    from .models.weights import load_state_dict

    weights, ranks_path = _artifact_paths(folder_or_files)
    try:
        spec = read_ranks_json(ranks_path, expected_model, model=model)
    except BadInputError as e:
        if model is None:
            raise
        raise BadInputError(f"{e.message} (checked against your {type(model).__name__}: pass the definition these "
                            "ranks were made for, as defined, before decomposition)") from e
    if not weights.is_file():
        raise BadInputError(f"weights file {str(weights)!r} does not exist; it is written beside "
                            f"{str(ranks_path)!r} by save_compressed")
    state = load_state_dict(str(weights))
    try:
        if model is None:
            model = rebuild(spec.model_spec, spec.ranks, state)
        else:
            model = restore(model, spec.ranks, state, inplace=inplace)
    except BadInputError as e:
        raise BadInputError(f"weights {str(weights)!r} do not fit the architecture of {str(ranks_path)!r} "
                            f"({e.message}); keep the two files of one save_compressed together") from e
    return model.eval(), spec.ranks


def onnx_metadata(example_input: torch.Tensor, model_name=None, ranks: dict | None = None,
                  extra: dict | None = None) -> dict[str, str]:
    """The `metadata_props` export_onnx writes: what a deployed file is, readable without this project
    (onnxruntime's `get_modelmeta().custom_metadata_map`, or `onnx.load(path).metadata_props`).

    haloc_version, input_size (JSON [C, H, W] of one sample, the size it was exported at), and when
    given model (the registry name, or your own label), ranks (JSON {layer: rank or [r_in, r_out]})
    and `extra` (str -> str, your own keys)."""
    from ._version import __version__

    meta = {"haloc_version": __version__, "input_size": json.dumps([int(d) for d in example_input.shape[1:]])}
    if model_name is not None:
        if isinstance(model_name, (dict, models.ModelSpec)):  # a ModelSpec or its dict form
            model_name = models.ModelSpec.of(model_name).name
        meta["model"] = str(model_name)
    if ranks is not None:
        plain = {k: list(v) if isinstance(v, (list, tuple)) else int(v) for k, v in ranks.items()}
        meta["ranks"] = json.dumps(plain, sort_keys=True)
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadInputError(f"ONNX metadata {key!r}: {value!r}: keys and values must be strings; "
                                "pass json.dumps(value) for anything else")
        meta[key] = value
    return meta


def _onnx_extra(name: str):
    """An ONNX package, or ImportError saying which extra brings it (the core does not need it)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{name} is not installed; ONNX export and checks need the onnx extra: "
                          "pip install 'haloc-ray[onnx]'") from e


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int | None = None,
                dynamic_batch: bool = True, *, model_name=None, ranks: dict | None = None,
                metadata: dict | None = None) -> Path:
    """Export `model` (eval mode) to one self-contained ONNX file, written atomically.

    Exporter: torch's dynamo (torch.export + onnxscript) exporter, the default since torch 2.9 and
    fully offline; the TorchScript one is deprecated. Tensors are stored inside the file
    (`external_data=False`; fine below ONNX's 2 GB limit). Input "input", output "logits";
    with `dynamic_batch` the batch dimension is symbolic. The file carries `onnx_metadata(...)`
    (version, input size, and `model_name`, `ranks`, `metadata` when given) as metadata_props.
    """
    onnx = _onnx_extra("onnx")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = onnx_metadata(example_input, model_name, ranks, metadata)  # bad metadata fails before the export
    kwargs = {"opset_version": opset} if opset is not None else {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)

    def write(tmp: Path) -> None:
        torch.onnx.export(model, (example_input,), tmp, dynamo=True, external_data=False, verbose=False,
                          input_names=["input"], output_names=["logits"], **kwargs)
        proto = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    with eval_mode(model):
        atomic_write(path, write)
    return path


def check_onnx(path: str | Path, model: nn.Module, example_input: torch.Tensor, rtol: float = 1e-4,
               atol: float = 1e-4) -> float:
    """Max |ONNX - PyTorch| on `example_input` with onnxruntime's CPU provider; raises if outside tolerance."""
    import numpy as np

    ort = _onnx_extra("onnxruntime")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_input.detach().cpu()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with eval_mode(model), torch.no_grad():
        want = model(x.to(next(model.parameters()).device)).cpu().numpy()
    if got.shape != want.shape:
        raise AssertionError(f"ONNX model {str(path)!r} returns shape {got.shape}, PyTorch {want.shape}")
    diff = np.abs(got - want)
    max_abs = float(diff.max())
    if not np.all(diff <= atol + rtol * np.abs(want)):
        raise AssertionError(f"ONNX model {str(path)!r} differs from PyTorch: max |diff| {max_abs:.3g} "
                             f"exceeds atol={atol} + rtol={rtol} x |value|")
    return max_abs
