"""The weights stage: the original model's weights in the run, `<run>/weights/original.pt`.

Every later stage starts from that file. It comes from `--weights` (torchvision's published
weights, a local file or an s3:// URI), or, without weights (the demo), from training the original
model here first: a Ray Train job of the project's one training loop (no teacher, cross-entropy
only), checkpointed after every epoch under `<run>/weights/pretrain/`, so an interrupted training
resumes at its last epoch.

    info = run_weights(layout, WeightsSpec(model="resnet20", data={"kind": "demo"}, train={"epochs": 3}))
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .run_layout import RunLayout
from .train_jobs import Workers, run_job

PRETRAIN_JOB = "original"


@dataclass(frozen=True)
class WeightsSpec:
    model: str | dict  # a registry name or a haloc.models.ModelSpec's dict form
    weights: str | None = None  # "torchvision", a file or s3://; None: train the original here
    num_classes: int | None = None
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    train: dict = field(default_factory=dict)  # haloc.train.TrainConfig fields of the training
    workers: Workers = field(default_factory=lambda: Workers(num_workers=1))


def run_weights(layout: RunLayout, spec: WeightsSpec, console=None) -> dict:
    """Write the original model's weights into the run (once); returns where they came from."""
    import haloc

    if layout.has_weights():
        return {"source": "store"}
    name = haloc.models.ModelSpec.of(spec.model).name
    if spec.weights:
        model = haloc.models.create(name, num_classes=spec.num_classes, weights=spec.weights)
        layout.write_weights(model.state_dict())
        return {"source": spec.weights.split("?", 1)[0]}  # never the URI's options (endpoints, keys)
    from haloc.train import TrainConfig
    from workers.finetune_loop import loop_config

    train = TrainConfig.from_dict({**spec.train, "kd_weight": 0.0}).to_dict()  # no teacher: plain cross-entropy
    if console is not None:
        console.print(f"no --weights: training the original {name} for {train['epochs']} epochs "
                      f"(checkpoints in {layout.uri('weights/pretrain')})")
    loop = loop_config(spec.model, {}, spec.data, train, spec.num_classes, label=("training the original", name))
    state, metrics = run_job(layout.pretrain_store(), PRETRAIN_JOB, loop, spec.workers, f"training the original {name}")
    layout.write_weights(state.model)
    last = state.history[-1] if state.history else {}
    return {"source": f"trained here for {state.epoch} epochs", "val": last.get("val"),
            "resumed_at_epoch": metrics.get("start_epoch", 0)}
