"""The fine-tune stage: one Ray Train `TorchTrainer` per selected architecture, resumable from the store.

    spec = FinetuneSpec(model="resnet20", data={"kind": "demo"}, train={"epochs": 2}, num_workers=2)
    results = run_finetune(RunLayout("runs", "r1"), configs, spec)  # {config_id: final record}

Layout in the store (orchestrator.run_layout):

    <run>/finetune/<config_id>/          Ray Train's run folder (checkpoints, state snapshots)
    <run>/finetune/<config_id>/final.pt  the fine-tuned student's state dict (no DDP prefix)
    <run>/finetune/<config_id>/final.json  its final metrics and history, written last: "done"

Resume: each fine-tune is a Ray Train job (orchestrator.train_jobs) whose run folder lies in the
store; started again, it resumes from its last checkpoint. A config whose final.json exists is
skipped. The final state is read from the last checkpoint and written to the store by the driver,
each file in one atomic write.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

from haloc.config import from_dict_strict
from haloc.errors import BadInputError

from ..artifacts import SelectedConfig, as_selected
from ..run_layout import RunLayout
from ..train_jobs import Workers, run_job

log = logging.getLogger(__name__)

INITS = ("supernet", "hosvd")


@dataclass(frozen=True)
class FinetuneSpec:
    model: str | dict = "resnet20"  # a registry name or a haloc.models.ModelSpec's dict form
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    train: dict = field(default_factory=dict)  # haloc.train.TrainConfig fields (epochs, lr, batch_size, ...)
    num_classes: int | None = None  # None: the model registry's default (demo: data's num_classes)
    # Pretrained weights of the original model: a store path relative to the run (as the search
    # spec's `weights`), else any source of haloc.models.create (a file, s3:// URI, "torchvision").
    weights: str | None = None
    num_workers: int = 2
    cpus_per_worker: float | None = None  # None: a node's CPUs shared among the workers (train_jobs.Workers)
    use_gpu: bool | None = None  # None: GPU workers when the cluster has enough GPUs
    max_epochs: int | None = None  # stop after this many completed epochs (a resumable partial run)
    max_failures: int = 1  # worker-group restarts from the last checkpoint
    # the student's starting weights: "supernet" (the search's own factors for the selected ranks,
    # when the search kept them) or "hosvd" (a fresh decomposition of the original's weights)
    init: str = "supernet"

    def __post_init__(self):
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise BadInputError(f"finetune spec: num_workers={self.num_workers!r} must be an int >= 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise BadInputError(f"finetune spec: cpus_per_worker={self.cpus_per_worker!r} must be > 0")
        if self.init not in INITS:
            raise BadInputError(f"finetune spec: init={self.init!r}; use one of {INITS}")
        if self.max_epochs is not None and (not isinstance(self.max_epochs, int) or self.max_epochs < 1):
            raise BadInputError(f"finetune spec: max_epochs={self.max_epochs!r} must be an int >= 1 or None")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneSpec:
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


# ---- the stage ------------------------------------------------------------------------------------

def _plain(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _name(model) -> str:
    return model["name"] if isinstance(model, dict) else model


def finetune_one(layout: RunLayout, config: SelectedConfig, spec: FinetuneSpec, model_state: dict | None) -> dict:
    """Fine-tune (or resume) one selected config; writes final.pt + final.json once all epochs are done."""
    from workers.finetune_loop import loop_config

    cid = config.config_id
    ranks = config.ranks
    cfg = spec.train_config()
    init, student_state = _student_start(layout, config, spec.init)
    loop = loop_config(spec.model, ranks, spec.data, spec.train, spec.class_count(), None, model_state,
                       spec.max_epochs, label=("fine-tune", cid), student_state=student_state)
    workers = Workers(spec.num_workers, spec.cpus_per_worker, spec.use_gpu, spec.max_failures)
    state, metrics = run_job(layout.finetune_store(), cid, loop, workers, f"fine-tune of {cid!r}")
    last = state.history[-1] if state.history else {}
    record = {"config_id": cid, "model": spec.model, "ranks": ranks, "num_classes": spec.class_count(),
              "epoch": state.epoch, "epochs": cfg.epochs, "done": state.epoch >= cfg.epochs,
              "history": state.history, "final_val": last.get("val"), "train_config": cfg.to_dict(),
              "data": spec.data_config().to_dict(), "num_workers": (last or {}).get("world_size"), "init": init,
              "metrics": {k: _plain(v) for k, v in metrics.items() if not isinstance(v, dict)}}
    if not record["done"]:
        log.info("fine-tune %s stopped after epoch %d of %d (max_epochs)", cid, state.epoch, cfg.epochs)
        return record
    record["weights"] = layout.final_weights(cid)
    layout.write_final(cid, state.model, record)
    return record


def _student_start(layout: RunLayout, config: SelectedConfig, init: str) -> tuple[str, dict | None]:
    """(what the student starts from, its state or None for a fresh HOSVD). A config whose search
    kept no weights (searched before they were kept) starts from HOSVD, and the record says so."""
    if init == "hosvd":
        return "hosvd", None
    if not config.searched_state or not layout.exists(config.searched_state):
        log.warning("fine-tune %s: no searched weights kept by its search; starting from HOSVD", config.config_id)
        return "hosvd (the search kept no weights)", None
    return "supernet", layout.read_searched(config.searched_state)


def run_finetune(layout: RunLayout, configs: list[dict], spec: FinetuneSpec | dict, *,
                 address: str | None = None) -> dict[str, dict]:
    """Fine-tune every selected config (in order; each trainer uses the whole worker group).

    Returns {config_id: record}; a record has "done" (all epochs), "history", "final_val",
    "weights" (the store path of final.pt) and "skipped" (True when final.json was already there).
    """
    from ..cluster import connect

    spec = spec if isinstance(spec, FinetuneSpec) else FinetuneSpec.from_dict(spec)
    spec.train_config(), spec.data_config()  # bad fields fail before Ray starts
    configs = as_selected(configs, _name(spec.model))
    ids = [c.config_id for c in configs]
    if len(set(ids)) != len(ids):
        raise BadInputError(f"finetune: config ids {ids} are not unique; give each selected config a config_id")
    results, todo = {}, []
    for cid, config in zip(ids, configs):
        if layout.has_final(cid) and layout.store.exists(layout.final_weights(cid)):
            results[cid] = dict(layout.read_final_info(cid), skipped=True)
        else:
            todo.append(config)
    if not todo:
        return results
    model_state = layout.original_state(spec.weights, spec.model, spec.class_count())
    connect(address)
    for config in todo:
        log.info("fine-tuning %s", config.config_id)
        results[config.config_id] = dict(finetune_one(layout, config, spec, model_state), skipped=False)
    return {cid: results[cid] for cid in ids}
