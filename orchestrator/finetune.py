"""The fine-tune stage: one Ray Train `TorchTrainer` per selected architecture, resumable from the store.

    spec = FinetuneSpec(model="resnet20", data={"kind": "demo"}, train={"epochs": 2}, num_workers=2)
    results = run_finetune("runs", "r1", configs, spec)    # {config_id: final record}

Layout in the store (DESIGN.md section 3):

    <run>/finetune/<config_id>/          Ray Train's run folder (checkpoints, state snapshots)
    <run>/finetune/<config_id>/final.pt  the fine-tuned student's state dict (no DDP prefix)
    <run>/finetune/<config_id>/final.json  its final metrics and history, written last: "done"

Resume: Ray 2.60 runs Ray Train V2, where `TorchTrainer.restore` / `can_restore` are gone (they
raise DeprecationWarning). A trainer started again with the same `RunConfig(name, storage_path)`
restores its checkpoint manager from the run folder, and the loop resumes from
`ray.train.get_checkpoint()`. A config whose final.json exists is skipped. `Result.metrics` may be
None (ENVIRONMENT.md), so the final state is read from the last checkpoint and written to the store
by the driver, each file in one atomic write.
"""
from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import asdict, dataclass, field

from haloc.errors import BadInputError
from haloc.config import from_dict_strict

from .store import Store, validate_name, validate_run_id

log = logging.getLogger(__name__)

FINETUNE_DIR = "finetune"
FINAL_WEIGHTS = "final.pt"
FINAL_INFO = "final.json"


@dataclass(frozen=True)
class FinetuneSpec:
    model: str = "resnet20"
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    train: dict = field(default_factory=dict)  # haloc.train.TrainConfig fields (epochs, lr, batch_size, ...)
    num_classes: int | None = None  # None: the model registry's default (demo: data's num_classes)
    # Pretrained weights of the original model: a store path relative to the run (as the search
    # spec's `weights`), else any source of haloc.models.create (a file, s3:// URI, "torchvision").
    weights: str | None = None
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None  # None: GPU workers when the cluster has enough GPUs
    max_epochs: int | None = None  # stop after this many completed epochs (a resumable partial run)
    max_failures: int = 1  # worker-group restarts from the last checkpoint

    def __post_init__(self):
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise BadInputError(f"finetune spec: num_workers={self.num_workers!r} must be an int >= 1")
        if self.cpus_per_worker <= 0:
            raise BadInputError(f"finetune spec: cpus_per_worker={self.cpus_per_worker!r} must be > 0")
        if self.max_epochs is not None and (not isinstance(self.max_epochs, int) or self.max_epochs < 1):
            raise BadInputError(f"finetune spec: max_epochs={self.max_epochs!r} must be an int >= 1 or None")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneSpec":
        return from_dict_strict(cls, data, "finetune spec")

    def data_config(self):
        from haloc.data import DataConfig

        return DataConfig.from_dict(self.data)

    def train_config(self):
        from haloc.train import TrainConfig

        return TrainConfig.from_dict(self.train)

    def class_count(self) -> int | None:
        """num_classes, else the demo data's class count (the registry's default otherwise)."""
        if self.num_classes is not None:
            return self.num_classes
        return self.data_config().num_classes if self.data_config().kind == "demo" else None


# ---- config ids and paths -------------------------------------------------------------------------

def targets_of(config: dict) -> list[str]:
    """The cost targets of a selected config: select.py's `targets`, or `hardware`."""
    t = config.get("targets", config.get("hardware"))
    if isinstance(t, str):
        return t.split("+")
    if not t:
        raise BadInputError(f"selected config {config!r} names no targets/hardware; rerun the select stage")
    return list(t)


def config_id(config: dict) -> str:
    """A config's stable id: its own `config_id`, else `<targets>-b<budget>` ("cpu-b0.5", "cpu_asic-b0.3");
    a single path segment, so it names a folder in the store and a Ray Train run."""
    cid = config.get("config_id") or f"{'_'.join(targets_of(config))}-b{float(config['budget']):g}"
    return validate_name(cid, "config id", example="cpu-b0.5")


def final_paths(run_id: str, cid: str) -> tuple[str, str]:
    base = f"{run_id}/{FINETUNE_DIR}/{cid}"
    return f"{base}/{FINAL_WEIGHTS}", f"{base}/{FINAL_INFO}"


def load_final_state(store, run_id: str, cid: str) -> dict:
    """The fine-tuned state dict of a config (tensors only)."""
    import torch

    from .profiling import open_store

    store = open_store(store)
    path = final_paths(run_id, cid)[0]
    if not store.exists(path):
        raise BadInputError(f"fine-tuned weights {store.uri_of(path)} do not exist; run the finetune stage first")
    return torch.load(io.BytesIO(store.read_bytes(path)), map_location="cpu", weights_only=True)


def resolve_weights(store: Store, run_id: str, weights: str | None, model: str,
                    num_classes: int | None = None) -> dict | None:
    """The original model's state dict, loaded once on the driver (None: the model's own init).

    `weights` is a store path relative to the run (as the search spec's), else any source of
    `haloc.models.create` (a local file, an s3:// URI, "torchvision"). Loading here checks the
    weights before Ray starts, and the workers need no access to the source.
    """
    if not weights:
        return None
    import torch

    if "://" not in weights and weights != "torchvision":
        rel = f"{run_id}/{weights}"
        try:
            in_store = store.exists(rel)
        except BadInputError:  # not a store path (absolute, '..'): a local file
            in_store = False
        if in_store:
            return torch.load(io.BytesIO(store.read_bytes(rel)), map_location="cpu", weights_only=True)
        if not os.path.isfile(weights):
            raise BadInputError(f"weights {weights!r} are neither in the store ({store.uri_of(rel)}) nor a local "
                                "file; pass a store path relative to the run, a file, an s3:// URI or 'torchvision'")
    import haloc

    return haloc.models.create(model, num_classes=num_classes, weights=weights).state_dict()


def as_config_list(configs) -> list[dict]:
    """The selected configs: a list, or the content of selected.json ({"configs": [...]})."""
    if isinstance(configs, dict) and isinstance(configs.get("configs"), list):
        return configs["configs"]
    if isinstance(configs, (list, tuple)) and all(isinstance(c, dict) for c in configs):
        return list(configs)
    raise BadInputError(f"configs must be a list of selected configs or selected.json's content, got "
                        f"{type(configs).__name__}; pass select's output")


# ---- the stage ------------------------------------------------------------------------------------

def _scaling(spec: FinetuneSpec):
    """ScalingConfig checked against the cluster: an infeasible request would wait forever."""
    import ray
    from ray.train import ScalingConfig

    total = ray.cluster_resources()
    gpus = total.get("GPU", 0)
    use_gpu = spec.use_gpu if spec.use_gpu is not None else gpus >= 1
    workers = spec.num_workers
    if use_gpu:
        if gpus < 1:
            raise BadInputError("finetune spec: use_gpu=True but the cluster has no GPU; set use_gpu to None or False")
        if workers > gpus:
            log.warning("fine-tune: %d workers requested, the cluster has %g GPUs: using %d", workers, gpus, int(gpus))
            workers = int(gpus)
        return ScalingConfig(num_workers=workers, use_gpu=True)
    per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if per_node < spec.cpus_per_worker or total.get("CPU", 0) < workers * spec.cpus_per_worker:
        raise BadInputError(f"finetune spec: {workers} workers x {spec.cpus_per_worker} CPU do not fit the cluster "
                            f"({total.get('CPU', 0):g} CPUs, at most {per_node:g} on one node); "
                            "lower num_workers or cpus_per_worker")
    return ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": spec.cpus_per_worker})


def _trainer(store: Store, run_id: str, cid: str, loop_config: dict, spec: FinetuneSpec):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from workers.finetune_loop import train_loop_per_worker

    run_config = RunConfig(name=cid, storage_path=store.sub(f"{run_id}/{FINETUNE_DIR}").root_path,
                           storage_filesystem=store.filesystem,
                           checkpoint_config=CheckpointConfig(num_to_keep=2),
                           failure_config=FailureConfig(max_failures=spec.max_failures))
    return TorchTrainer(train_loop_per_worker, train_loop_config=loop_config, scaling_config=_scaling(spec),
                        run_config=run_config)


def _read_checkpoint(checkpoint):
    from pathlib import Path

    from haloc.train import TrainState
    from workers.finetune_loop import STATE_FILE

    with checkpoint.as_directory() as folder:
        return TrainState.load(Path(folder) / STATE_FILE)


def _plain(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def finetune_one(store: Store, run_id: str, config: dict, spec: FinetuneSpec, model_state: dict | None) -> dict:
    """Fine-tune (or resume) one selected config; writes final.pt + final.json once all epochs are done."""
    import torch

    from workers.finetune_loop import loop_config

    cid = config_id(config)
    ranks = config["ranks"]
    cfg = spec.train_config()
    loop = loop_config(spec.model, ranks, spec.data, spec.train, spec.class_count(), None, model_state,
                       spec.max_epochs)
    result = _trainer(store, run_id, cid, loop, spec).fit()
    if result.error:
        raise RuntimeError(f"fine-tune of {cid!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"fine-tune of {cid!r} ended without a checkpoint; see the Ray Train logs under "
                           f"{store.uri_of(f'{run_id}/{FINETUNE_DIR}/{cid}')}")
    state = _read_checkpoint(result.checkpoint)
    last = state.history[-1] if state.history else {}
    record = {"config_id": cid, "model": spec.model, "ranks": ranks, "num_classes": spec.class_count(),
              "epoch": state.epoch, "epochs": cfg.epochs, "done": state.epoch >= cfg.epochs,
              "history": state.history, "final_val": last.get("val"), "train_config": cfg.to_dict(),
              "data": spec.data_config().to_dict(), "num_workers": (last or {}).get("world_size"),
              "metrics": {k: _plain(v) for k, v in (result.metrics or {}).items() if not isinstance(v, dict)}}
    if not record["done"]:
        log.info("fine-tune %s stopped after epoch %d of %d (max_epochs)", cid, state.epoch, cfg.epochs)
        return record
    weights_path, info_path = final_paths(run_id, cid)
    buf = io.BytesIO()
    torch.save(state.model, buf)
    store.write_bytes(weights_path, buf.getvalue())
    record["weights"] = weights_path
    store.write_json(info_path, record)  # last: its presence means "done"
    return record


def run_finetune(store, run_id: str, configs: list[dict], spec: FinetuneSpec | dict, *,
                 address: str | None = None) -> dict[str, dict]:
    """Fine-tune every selected config (in order; each trainer uses the whole worker group).

    Returns {config_id: record}; a record has "done" (all epochs), "history", "final_val",
    "weights" (the store path of final.pt) and "skipped" (True when final.json was already there).
    """
    from .cluster import connect
    from .profiling import open_store

    store = open_store(store)
    validate_run_id(run_id)
    spec = spec if isinstance(spec, FinetuneSpec) else FinetuneSpec.from_dict(spec)
    spec.train_config(), spec.data_config()  # bad fields fail before Ray starts
    configs = as_config_list(configs)
    ids = [config_id(c) for c in configs]
    if len(set(ids)) != len(ids):
        raise BadInputError(f"finetune: config ids {ids} are not unique; give each selected config a config_id")
    results, todo = {}, []
    for cid, config in zip(ids, configs):
        info = final_paths(run_id, cid)[1]
        if store.exists(info) and store.exists(final_paths(run_id, cid)[0]):
            results[cid] = dict(store.read_json(info), skipped=True)
        else:
            todo.append(config)
    if not todo:
        return results
    model_state = resolve_weights(store, run_id, spec.weights, spec.model, spec.class_count())
    connect(address)
    for config in todo:
        cid = config_id(config)
        log.info("fine-tuning %s", cid)
        results[cid] = dict(finetune_one(store, run_id, config, spec, model_state), skipped=False)
    return {cid: results[cid] for cid in ids}
