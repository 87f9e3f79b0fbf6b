"""The Ray Train loop that fine-tunes one compressed architecture with knowledge distillation.

`train_loop_per_worker(config)` runs on every TorchTrainer worker. The architecture is data (model
name, num_classes, ranks), so every worker rebuilds the same student: the original model with its
pretrained weights is the frozen teacher, and the student starts from the search's own factors for
its ranks (`student_state`) or, without them, from `haloc.decompose` of the teacher's weights (HOSVD
for Tucker-2, SVD for 1x1 convs and Linear). Data-parallel through
`prepare_model` (DDP; gloo on CPU, NCCL on GPU). Each epoch draws its sample order from
(seed, epoch) alone, and a `TrainState` checkpoint (weights without DDP's `module.` prefix,
optimizer, scheduler, history) is reported after every epoch, so a run resumed from
`ray.train.get_checkpoint()` continues at the next epoch with the schedule it would have had.

config keys (plain data, see `loop_config`):
    model, num_classes, ranks            the architecture
    weights                              a source for `haloc.models.create` (file, s3:// URI,
                                         "torchvision") or None
    model_state                          a state dict of the original model (wins over `weights`)
    student_state                        the student's starting state dict (the search's own
                                         factors); None: HOSVD of the original's weights
    data                                 `haloc.data.DataConfig` fields
    train                                `haloc.train.TrainConfig` fields (epochs, lr, batch size, ...)
    max_epochs                           stop after this many completed epochs (None: train.epochs);
                                         the cosine schedule still spans train.epochs, so a later
                                         run without it resumes exactly where this one stopped
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # inside each reported checkpoint directory


def loop_config(model, ranks: dict, data: dict, train: dict, num_classes: int | None = None,
                weights: str | None = None, model_state: dict | None = None,
                max_epochs: int | None = None, label: tuple[str, str] | None = None,
                student_state: dict | None = None) -> dict:
    """The `train_loop_config` of one fine-tune (validated here, on the driver, before Ray runs it).
    `label`: (stage, job) named in the progress lines, e.g. ("fine-tune", "cpu-b0.6")."""
    from haloc.data import DataConfig
    from haloc.errors import BadInputError
    from haloc.train import TrainConfig

    DataConfig.from_dict(data)
    TrainConfig.from_dict(train)
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
        raise BadInputError(f"max_epochs={max_epochs!r} must be a positive int or None")
    ranks = {k: list(v) if isinstance(v, tuple) else v for k, v in ranks.items()}
    return dict(model=model, num_classes=num_classes, ranks=ranks, weights=weights, model_state=model_state,
                data=dict(data), train=dict(train), max_epochs=max_epochs, label=list(label) if label else None,
                student_state=student_state)


def build_models(config: dict):
    """(teacher, student): the original model with its weights, and the student at the config's ranks."""
    import haloc

    spec = haloc.models.ModelSpec.of(config["model"])
    teacher = haloc.models.create(spec.name, num_classes=config.get("num_classes") or spec.num_classes,
                                  weights=None if config.get("model_state") is not None else config.get("weights"))
    if config.get("model_state") is not None:
        teacher.load_state_dict(config["model_state"])
    if config.get("student_state") is not None:  # the search's own factors for these ranks
        student = haloc.restore(teacher, config["ranks"], config["student_state"])
    else:
        student = haloc.decompose(teacher, config["ranks"])  # a new module; factors from the teacher's weights
    return teacher.eval(), student


def _loaders(config: dict, cfg, world_size: int, world_rank: int):
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from haloc.data import DataConfig, build_datasets, make_loader

    from .data_cache import local_data_config

    train_set, val_set = build_datasets(DataConfig.from_dict(local_data_config(config["data"])))
    # a data set smaller than a batch still trains (one batch an epoch) instead of yielding no batch
    batch = max(2, min(cfg.batch_size, len(train_set) // world_size))
    if world_size > 1:
        # Our own sampler (not prepare_data_loader's): its order depends on (seed, epoch) only.
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=world_rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        train = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True,
                           generator=torch.Generator().manual_seed(cfg.seed))
    else:
        train = make_loader(train_set, batch, shuffle=True, seed=cfg.seed, drop_last=True)
    val = make_loader(val_set, cfg.batch_size, shuffle=False)
    return train, val


def train_loop_per_worker(config: dict) -> None:
    """One worker of the data-parallel fine-tune: haloc's training loop, reporting to Ray Train."""
    import ray.train
    import ray.train.torch
    import torch

    from haloc.train import TrainConfig, TrainState, finetune

    from .progress import emit

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    torch.manual_seed(cfg.seed)
    teacher, student = build_models(config)
    train_loader, val_loader = _loaders(config, cfg, world, rank)
    model = ray.train.torch.prepare_model(student)  # to the worker's device; DDP when world > 1
    device = next(model.parameters()).device
    train_loader = ray.train.torch.prepare_data_loader(train_loader, add_dist_sampler=False)

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = TrainState.load(Path(folder) / STATE_FILE)
    snapshot = read_snapshot(config.get("snapshot"))
    if snapshot is not None and (state is None or snapshot.epoch > state.epoch):
        state = snapshot  # an epoch whose report Ray Train never registered (a signal in between)
    if state is not None:
        log.info("resuming at epoch %d of %d", state.epoch, cfg.epochs)
    start = state.epoch if state is not None else 0

    def report(state: TrainState, entry: dict) -> None:
        # Every worker calls report; only rank 0 hands over the (identical) state. The snapshot goes
        # first: Ray Train drops a report that an abort interrupts before it is registered, the
        # snapshot then still holds the epoch.
        if rank == 0:
            try:
                write_snapshot(config.get("snapshot"), state)
            except Exception as e:
                log.warning("epoch snapshot not written (%s); the checkpoint still is", e)  # the record
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                state.save(Path(tmp) / STATE_FILE)
            ckpt = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report(_flat(entry, state.epoch, start, cfg.epochs), checkpoint=ckpt)
        if rank == 0 and config.get("label"):
            stage, job = config["label"]
            train_m, val_m = entry.get("train") or {}, entry.get("val") or {}
            emit("train_epoch", stage=stage, job=job, epoch=state.epoch, epochs=cfg.epochs,
                 train_loss=train_m.get("loss"), train_top1=train_m.get("top1"), val_top1=val_m.get("top1"))

    # Rank 0 evaluates the whole validation set on the unwrapped model (no collectives needed).
    result = finetune(model, teacher, train_loader, val_loader, cfg, state=state,
                      on_epoch_end=lambda _epoch, entry, current: report(current, entry), device=device,
                      stop_after=config.get("max_epochs"), evaluate_val=rank == 0,
                      history_extra={"world_size": world})
    if not result.history[start:]:  # nothing was left to train: report the restored state again,
        report(result.state, result.history[-1] if result.history else {})  # so the result carries it


def read_snapshot(uri: str | None):
    """The TrainState at `uri` (a local path, or a store URI pyarrow opens), or None where none is."""
    if not uri:
        return None
    from haloc.train import TrainState

    if "://" not in uri:
        return TrainState.load(uri) if Path(uri).is_file() else None
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return None
    with tempfile.TemporaryDirectory() as tmp, filesystem.open_input_stream(path) as src:
        local = Path(tmp) / STATE_FILE
        local.write_bytes(src.read())
        return TrainState.load(local)


def write_snapshot(uri: str | None, state) -> None:
    """Write `state` to `uri` whole or not at all (a local atomic rename; one S3 PUT)."""
    if not uri:
        return
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        state.save(uri)
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / STATE_FILE
        state.save(local)
        with filesystem.open_output_stream(path) as out:
            out.write(local.read_bytes())


def _flat(entry: dict, completed: int, start: int, epochs: int) -> dict:
    """Flat metrics of one epoch for ray.train.report."""
    train, val = entry.get("train") or {}, entry.get("val") or {}
    return {"epoch": completed, "start_epoch": start, "epochs": epochs, "done": completed >= epochs,
            "train_loss": train.get("loss"), "train_top1": train.get("top1"), "lr": train.get("lr"),
            "val_top1": val.get("top1"), "val_top5": val.get("top5"), "val_loss": val.get("loss")}
