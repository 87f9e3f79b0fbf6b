"""Compressed-model artifacts: `model.pt` + `ranks.json`, and ONNX export checked with onnxruntime.

A compressed architecture is data: the model name and its ranks. `load_compressed` rebuilds it with
`haloc.models.create(name)` + `haloc.decompose(model, ranks)` and loads the weights tensor-only
(`torch.load(weights_only=True)`), so an artifact never unpickles code.

ranks.json: `{"model": "resnet18", "ranks": {"layer1.0.conv1": 32, "layer2.0.conv1": [16, 32]}, "num_classes": 1000}`
(a Tucker-2 rank may be a pair [r_in, r_out]; a layer absent from "ranks" is uncompressed;
"num_classes" is optional and defaults to the registry's value for the model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import models
from .decomposition import build_layer, check_ranks, decomposable_layers
from .errors import BadInputError
from .files import atomic_write
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
    def model_spec(self) -> "models.ModelSpec":
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
    model_name = spec.name
    model = models.create(model_name, num_classes=num_classes or spec.num_classes)
    checked = check_ranks(model, ranks)
    specs = decomposable_layers(model)
    for name, rank in checked.items():
        model.set_submodule(name, build_layer(specs[name], rank))
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise BadInputError(f"weights do not fit {model_name!r} with ranks of {len(checked)} layers "
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

    `model_name` is the registry name, or a ModelSpec (its input size is then recorded too).
    `ranks` are validated against a fresh model, so a saved artifact always reloads.
    """
    given = models.ModelSpec.of(model_name)
    num_classes = _num_classes_of(model)
    base = models.create(given.name, num_classes=num_classes)
    spec = RanksFile(given.name, check_ranks(base, ranks), num_classes, given.input_size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, ranks_path = folder / WEIGHTS_FILE, folder / RANKS_FILE
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: torch.save(state, tmp))
    atomic_write(ranks_path, json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n")
    return {"model": str(weights), "ranks": str(ranks_path)}


def read_ranks_json(path: str | Path, expected_model: str | None = None) -> RanksFile:
    """Parse and validate a ranks JSON; BadInputError naming the file (and layer) on any problem."""
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
        base = models.create(name, num_classes=num_classes)
        ranks = check_ranks(base, obj["ranks"])
        size = models.ModelSpec(name, num_classes, obj.get("input_size")).input_size
    except BadInputError as e:
        raise BadInputError(f"ranks file {str(path)!r}: {e}") from e
    return RanksFile(name, ranks, num_classes, size)


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


def load_compressed(folder_or_files, expected_model: str | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode, ranks) from a save_compressed folder, its ranks.json, or (model.pt, ranks.json)."""
    from .models.weights import load_state_dict

    weights, ranks_path = _artifact_paths(folder_or_files)
    spec = read_ranks_json(ranks_path, expected_model)
    if not weights.is_file():
        raise BadInputError(f"weights file {str(weights)!r} does not exist; it is written beside "
                            f"{str(ranks_path)!r} by save_compressed")
    state = load_state_dict(str(weights))
    try:
        model = rebuild(spec.model_spec, spec.ranks, state)
    except BadInputError as e:
        raise BadInputError(f"weights {str(weights)!r} do not fit the architecture of {str(ranks_path)!r} "
                            f"({e}); keep the two files of one save_compressed together") from e
    return model.eval(), spec.ranks


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int | None = None,
                dynamic_batch: bool = True) -> Path:
    """Export `model` (eval mode) to one self-contained ONNX file, written atomically.

    Exporter: torch's dynamo (torch.export + onnxscript) exporter, the default since torch 2.9 and
    fully offline; the TorchScript one is deprecated. Tensors are stored inside the file
    (`external_data=False`; fine below ONNX's 2 GB limit). Input "input", output "logits";
    with `dynamic_batch` the batch dimension is symbolic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"opset_version": opset} if opset is not None else {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    with eval_mode(model):
        atomic_write(path, lambda tmp: torch.onnx.export(
            model, (example_input,), tmp, dynamo=True, external_data=False, verbose=False,
            input_names=["input"], output_names=["logits"], **kwargs))
    return path


def check_onnx(path: str | Path, model: nn.Module, example_input: torch.Tensor, rtol: float = 1e-4,
               atol: float = 1e-4) -> float:
    """Max |ONNX - PyTorch| on `example_input` with onnxruntime's CPU provider; raises if outside tolerance."""
    import numpy as np
    import onnxruntime as ort

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
