"""The one configuration path: every way a run is described (a pipeline's defaults, a preset, what
the data says, a --config file, command-line flags, the Python API's keyword arguments) ends in one
RunSpec, built and checked here once.

    build_spec(defaults, given, config) -> RunSpec

Precedence: the pipeline's defaults < its preset < what the data says (classes, image size) < the
file < the settings given. `given` holds RunSpec fields by name: pipelines.cli.flags_given makes it
from the flags, pipelines.api.compress from its keyword arguments (no command line in between).
"""
from __future__ import annotations

from haloc.errors import BadInputError

from .presets import PipelineDefaults

DEFAULT_PRESET, DEFAULT_STORE = "demo", "runs"


def build_spec(defaults: PipelineDefaults, given: dict, config: dict | None = None, where: str = "--config"):
    """The RunSpec of `given` settings over `config` (a checked --config file) over the preset and the
    pipeline's defaults; the data is read once for its class count, image size and description."""
    from pathlib import Path

    from orchestrator.run_spec import RunSpec

    from . import run_config

    config = config or {}
    from_file, rest = run_config.split_config(config, defaults.pipeline, where)
    basis = {**from_file, **{k: given[k] for k in run_config.PARSED if k in given}}
    preset, store, data = basis.get("preset") or DEFAULT_PRESET, basis.get("store") or DEFAULT_STORE, basis.get("data")
    if preset == "demo" and data:
        raise BadInputError("the demo preset generates its own data: drop --data, or use --preset quick for the "
                            "demo's short settings on your data")
    if preset != "demo" and not data:
        raise BadInputError(f"--preset {preset} needs --data (the {defaults.dataset or 'data'} folder, an s3:// "
                            "URI or package.module:factory); pass --data, or run --preset demo on generated data")
    values = dict(pipeline=defaults.pipeline, model=defaults.model, dataset=defaults.dataset,
                  num_classes=defaults.num_classes, image_size=defaults.image_size, preset=preset,
                  data=data, store=store, address=basis.get("address"))
    values.update(defaults.preset(preset))
    if basis.get("model"):
        values["model"] = basis["model"]
    if not values.get("model"):
        raise BadInputError(f"{defaults.pipeline} needs --model: a registry name, torchvision:NAME or "
                            "package.module:factory")
    if basis.get("py_modules"):
        from orchestrator.preflight import use_py_modules

        values["py_modules"] = tuple(str(Path(d).expanduser().resolve()) for d in basis["py_modules"])
        use_py_modules(values["py_modules"])  # a factory named by --model or --data imports from them
    num_classes, image_size = basis.get("num_classes"), basis.get("image_size")
    if data:
        values.update(_from_the_data(data, num_classes, image_size, defaults))
    else:
        values.update({k: v for k, v in (("num_classes", num_classes), ("image_size", image_size)) if v is not None})
    run_config.check_dataset(config, values["dataset"], where)
    run_id = basis.get("run_id")
    values["run_id"] = run_id if run_id is not None else _default_run_id(defaults.pipeline, preset, data)
    values.update(rest)  # the file's other fields; the settings given override them
    values.update({k: v for k, v in given.items() if k not in run_config.PARSED})
    return RunSpec(**values)


def _from_the_data(data: str, num_classes: int | None, image_size: int | None, defaults: PipelineDefaults) -> dict:
    """num_classes, image_size and the data's description, read from --data (synced first if s3://);
    a --num-classes that contradicts the data is refused."""
    from haloc.data import PICKLED_PREFIX, is_factory_path
    from orchestrator.preflight import detect_data_kind, read_data_facts

    kind = "factory" if is_factory_path(data) else "pickled" if data.startswith(PICKLED_PREFIX) \
        else (defaults.dataset or detect_data_kind(data))
    facts = read_data_facts(kind, data)
    own = kind in ("factory", "pickled")  # the user's own datasets, with their own transforms
    if own and not facts.num_classes:  # the datasets do not say: the flag must
        if num_classes is None:
            raise BadInputError(f"--data {data}: its datasets have no `classes` attribute to read the class count "
                                "from; pass --num-classes")
        facts = type(facts)(num_classes, facts.image_side, facts.description.replace(
            "class count not given by the data", f"{num_classes} classes (--num-classes)"))
    if num_classes is not None and num_classes != facts.num_classes:
        raise BadInputError(f"--num-classes {num_classes}: the data at {data.split('?', 1)[0]!r} has "
                            f"{facts.num_classes} classes; drop --num-classes or pass {facts.num_classes}")
    if kind == "cifar10" and image_size not in (None, 32):
        raise BadInputError(f"--image-size {image_size}: CIFAR-10 images are 32x32; drop --image-size or pass 32")
    if own and facts.image_side is not None and image_size not in (None, facts.image_side):
        raise BadInputError(f"--image-size {image_size}: the datasets of {data} give {facts.image_side}-pixel "
                            f"images (their own transforms); drop --image-size or pass {facts.image_side}")
    if image_size is None:
        side = facts.image_side
        image_size = side if side is not None and (side < defaults.image_size or own) \
            else defaults.image_size
    return {"num_classes": facts.num_classes, "image_size": image_size, "data_description": facts.description,
            "dataset": kind}


def _default_run_id(pipeline: str, preset: str, data: str | None) -> str:
    """<pipeline>-demo; with data, <pipeline>-<preset>-<the data folder's name> (a safe run id)."""
    import re

    if not data:
        return f"{pipeline}-{preset}"
    name = data.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{pipeline}-{preset}-{name}")[:64].rstrip("-.")


