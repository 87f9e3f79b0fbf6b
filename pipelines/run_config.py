"""`--config run.yaml`: the RunSpec's fields from a YAML file, under the flags given on the command line.

    # run.yaml: any RunSpec field (orchestrator.run_spec), e.g.
    preset: quick
    data: /data/cifar10
    budgets: [0.5, 0.7]
    finetune_lr: 0.02     # fields without a flag can be set here too

Precedence: the pipeline's defaults < its preset < what --data says (classes, image size) < the file
< the flags (pipelines.spec_builder). Unknown keys and wrong types are refused naming the key (exit 2).
Every run writes its effective config to `<store>/<run>/config.yaml` (orchestrator.run_layout), and
`--config` of that file reproduces the run (the same run id and store: it resumes, or re-renders when
done; pass a new --run-id for a fresh run).
"""
from __future__ import annotations

import types
import typing
from pathlib import Path

from haloc.errors import BadInputError

# Fields the flags' parsing itself starts from: merged into the parsed flags where a flag was not given.
PARSED = ("preset", "data", "store", "run_id", "num_classes", "image_size", "address", "model", "py_modules")
# Fields derived from the command and the data, not settable: checked (pipeline, dataset) or dropped.
DERIVED = ("pipeline", "dataset", "data_description")


def _fields() -> dict[str, object]:
    from orchestrator.run_spec import RunSpec

    return typing.get_type_hints(RunSpec)


def load_config(path: str) -> dict:
    """The file's settings, each checked against the RunSpec field of its name (lists become tuples)."""
    import yaml

    where = f"--config {path}"
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BadInputError(f"{where}: no such file; pass the path of a YAML file of run settings "
                            "(a run writes its own as <store>/<run>/config.yaml)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{where} cannot be read ({e}); pass a readable YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise BadInputError(f"{where} is not valid YAML{at} ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(f"{where} must be a mapping of run settings (key: value), not a {type(data).__name__}")
    return checked_settings(where, data)


def checked_settings(where: str, settings: dict) -> dict:
    """Each setting checked against the RunSpec field of its name (a list or tuple becomes a tuple);
    an unknown name or a wrong type is refused naming it and `where` it came from."""
    hints = _fields()
    unknown = sorted(str(k) for k in settings if k not in hints)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(hints))}")
    return {key: _checked(where, key, list(value) if isinstance(value, tuple) else value, hints[key])
            for key, value in settings.items()}


def _checked(where: str, key: str, value, hint):
    """`value` if it has the field's type (an int is a float too; a list is a tuple), else BadInputError."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        item = args[0]
        if not isinstance(value, list) or not all(_is(v, item) for v in value):
            raise BadInputError(f"{where}: {key}: {value!r} must be a list of {_name(item)}, "
                                f"e.g. {key}: [{_example(item)}]")
        return tuple(float(v) if item is float else v for v in value)
    if not _is(value, hint):
        raise BadInputError(f"{where}: {key}: {value!r} must be {_name(hint)}, e.g. {key}: {_example(hint)}")
    return float(value) if hint is float else value


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _name(kind) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _example(kind) -> str:
    return {bool: "true", int: "3", float: "0.5", str: "cpu"}.get(kind, "...")


def split_config(config: dict, pipeline: str, where: str) -> tuple[dict, dict]:
    """(the file's PARSED fields, its other fields): the first are the basis the flags' own parsing
    starts from, where no flag was given; the others go into the RunSpec after the preset and the data,
    and a setting given overrides them there (pipelines.spec_builder.build_spec)."""
    stored = config.get("pipeline")
    if stored is not None and stored != pipeline:
        raise BadInputError(f"{where}: it is a config of pipeline {stored!r}, not {pipeline!r}; "
                            f"run it with `haloc run {stored} --config ...`, or drop its pipeline key")
    parsed = {k: config[k] for k in PARSED if k in config}
    rest = {k: v for k, v in config.items() if k not in PARSED and k not in DERIVED}
    if "profile_dirs" in rest:  # relative to where the command runs, as --profile-dir is
        rest["profile_dirs"] = tuple(str(Path(d).expanduser().resolve()) for d in rest["profile_dirs"])
    return parsed, rest


def check_dataset(config: dict, dataset: str, where: str) -> None:
    """A config's dataset must be the one its preset and pipeline give (it is derived, not chosen)."""
    stored = config.get("dataset")
    if stored is not None and stored != dataset:
        raise BadInputError(f"{where}: dataset {stored!r} does not match this command's {dataset!r} (the demo "
                            "preset's generated data is 'demo', --data is the pipeline's own data set); "
                            "drop the dataset key, or use the preset the config was made with")
