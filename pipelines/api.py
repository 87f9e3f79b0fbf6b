"""The pipeline as a Python call, for users who do not want the command line.

    from pipelines.api import compress
    report = compress("torchvision:resnet18", "mypkg.data:my_datasets", hardware=["cpu"], budgets=[0.5],
                      weights="my_resnet18.pt", store="runs")
    best = report.best("cpu")                  # the most accurate result that met its budget on measurement
    print(best.config_id, best.top1, best.measured_latency_ms["cpu"], best.artifacts["onnx"])

`compress` takes what the command line takes (python -m pipelines.compress): the model as a registry
name, `torchvision:NAME`, `package.module:factory` or an importable callable; the data as a folder,
an s3:// URI, `package.module:factory` (returning (train, val) torch Datasets) or an importable
callable. Datasets are named by their factory rather than passed as objects because every Ray node
builds them itself (ship the factory's package with `py_modules=[folder]`). Settings are RunSpec
fields by name (`search_epochs=5`, `finetune_lr=0.02`, ...). Bad input raises
haloc.errors.BadInputError (the command line's exit 2); a missed budget does not raise: it is in
`report.misses` (the command line's exit 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from haloc.errors import BadInputError


@dataclass(frozen=True)
class Result:
    """One selected, fine-tuned and validated model (a report.json `results` entry, typed)."""

    config_id: str
    hardware: str  # the target(s) it was searched for
    budget: float
    top1: float
    top5: float
    flops: int
    params: int
    ranks: dict
    measured_latency_ms: dict  # {hardware: ms}
    speedup: dict  # {hardware: original / compressed, measured}
    met: dict  # {hardware: budget met on measurement}
    artifacts: dict  # {"model" | "ranks" | "onnx": path in the store}
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def met_all(self) -> bool:
        return bool(self.met) and all(self.met.values())

    @classmethod
    def from_dict(cls, r: dict) -> Result:
        return cls(config_id=r.get("config_id") or r["hardware"], hardware=r["hardware"], budget=r["budget"],
                   top1=r["top1"], top5=r["top5"], flops=r["flops"], params=r["params"], ranks=dict(r["ranks"]),
                   measured_latency_ms=dict(r["measured_latency_ms"]), speedup=dict(r["speedup"]),
                   met={hw: bool(c.get("met")) for hw, c in (r.get("budget_check") or {}).items()},
                   artifacts=dict(r["artifacts"]), raw=r)


@dataclass(frozen=True)
class Report:
    """A run's report.json, typed: the results, the original's figures, the warnings and misses."""

    run_id: str
    model: str
    dataset: str
    hardware: list
    baseline: dict
    results: list
    warnings: list
    misses: list  # what the command line names on exit 3: budgets missed on measurement, noisy LUTs accepted
    store: str | None
    raw: dict = field(repr=False, default_factory=dict)

    def best(self, hardware: str) -> Result | None:
        """The most accurate result searched for `hardware` that met its budget there on measurement."""
        fits = [r for r in self.results if r.met.get(hardware) and hardware in r.hardware.split("+")]
        return max(fits, key=lambda r: r.top1, default=None)

    @classmethod
    def from_dict(cls, report: dict) -> Report:
        from orchestrator.verdicts import misses

        return cls(run_id=report["run_id"], model=report["model"], dataset=report["dataset"],
                   hardware=list(report["hardware"]), baseline=dict(report["baseline"]),
                   results=[Result.from_dict(r) for r in report["results"]], warnings=list(report.get("warnings", [])),
                   misses=list(misses(report)), store=report.get("store"), raw=report)


def _named(thing, what: str) -> str:
    """A registry name / factory path as given, or `module:qualname` of an importable callable."""
    if isinstance(thing, (str, Path)):
        return str(thing)
    if callable(thing):
        module, name = getattr(thing, "__module__", None), getattr(thing, "__qualname__", "")
        if module and module != "__main__" and "<" not in name and "." not in name:
            return f"{module}:{name}"
        raise BadInputError(f"{what} {thing!r} is not importable by name (defined in __main__, or nested); every "
                            "Ray node imports it: move it into a module of a package, and pass py_modules=[folder]")
    raise BadInputError(f"{what} must be a name, a path or an importable callable, not a {type(thing).__name__}")


def compress(model, data=None, *, train=None, val=None, verbose: bool = False, **settings) -> Report:
    """Run (or resume) the whole pipeline on `model` and `data`; returns the typed report.

    `data`: a folder, URI or factory as the command line takes it; or `train` and `val`, torch
    Datasets (your transforms included), which are pickled (cloudpickle) into the store once,
    `<store>/_datasets/<hash>/datasets.pkl`, for every node to load (their classes must be
    importable there: py_modules=[folder]). `data=None` with `preset="demo"` (the default without
    data) uses the generated demo data. Every keyword is a RunSpec field (orchestrator.run_spec),
    e.g. hardware=["cpu", "asic"], budgets=[0.5], store="s3://bucket/runs", address="auto",
    search_epochs=5, finetune_lr=0.02.
    """
    if (train is None) != (val is None):
        raise BadInputError("compress(): give both train and val datasets, or neither")
    if train is not None:
        if data is not None:
            raise BadInputError("compress(): give data, or train and val, not both")
        data = _store_datasets(train, val, settings.get("store") or "runs")
    from orchestrator.run_spec import RunSpec

    from .presets import COMPRESS
    from .run_config import checked_settings
    from .spec_builder import build_spec

    fields = set(RunSpec.__dataclass_fields__)
    unknown = sorted(k for k in settings if k not in fields or k in ("pipeline", "model", "data", "dataset"))
    if unknown:
        raise BadInputError(f"compress(): unknown setting(s) {unknown}; give RunSpec fields, e.g. budgets=[0.5], "
                            "hardware=['cpu'], search_epochs=5")
    settings = {k: v for k, v in settings.items() if v is not None}  # None: not given, as a flag left out
    settings.setdefault("preset", "demo" if data is None else "quick")
    if "py_modules" in settings:
        settings["py_modules"] = [str(folder) for folder in settings["py_modules"]]
    given = dict(settings, model=_named(model, "model"), **({"data": _named(data, "data")} if data is not None else {}))
    # the keywords are RunSpec fields: checked for their types as a --config file's keys are, then the one
    # configuration path the command line takes too (no flags, no file in between)
    spec = build_spec(COMPRESS, checked_settings("compress()", given))
    return run(spec, verbose=verbose)


def _store_datasets(train, val, store: str) -> str:
    """Pickle (train, val) into the store once (named by the bytes' hash); returns the folder's URI."""
    import hashlib

    from ray import cloudpickle  # pickles what plain pickle cannot: classes and lambdas of the user's script

    from haloc.data import PICKLED_FILE, PICKLED_PREFIX
    from orchestrator.store import Store

    for d, name in ((train, "train"), (val, "val")):
        if not (hasattr(d, "__len__") and hasattr(d, "__getitem__")):
            raise BadInputError(f"compress(): {name} must be a torch Dataset (with __len__ and __getitem__), "
                                f"not a {type(d).__name__}")
    blob = cloudpickle.dumps((train, val))
    folder = f"_datasets/{hashlib.sha256(blob).hexdigest()[:16]}"
    target = Store.open(store)
    if not target.exists(f"{folder}/{PICKLED_FILE}"):
        target.write_bytes(f"{folder}/{PICKLED_FILE}", blob)
    if not target.is_remote:
        return PICKLED_PREFIX + str(Path(target.root_path) / folder)
    return PICKLED_PREFIX + target.uri_of(folder)


def run(spec, *, verbose: bool = False) -> Report:
    """Run (or resume) a RunSpec (or its dict form, e.g. a run's config.yaml loaded); returns the typed report."""
    from orchestrator.run_spec import RunSpec
    from orchestrator.runner import run_pipeline

    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    if not isinstance(spec, RunSpec):
        raise BadInputError(f"run() needs a RunSpec or its dict, not a {type(spec).__name__}")
    return Report.from_dict(run_pipeline(spec, verbose=verbose))


def load_report(store: str, run_id: str) -> Report:
    """The typed report of a finished run in `store`."""
    from orchestrator.run_layout import RunLayout
    from orchestrator.store import Store

    return Report.from_dict(RunLayout(Store.open(store), run_id).read_report())
