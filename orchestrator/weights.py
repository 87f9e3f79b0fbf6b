"""The weights stage: the original model's weights in the run, `<run>/weights/original.pt`.

Every later stage starts from that file. It comes from `--weights` (torchvision's published
weights, a local file or an s3:// URI), or, without weights (the demo), from training the original
model here first, as a Ray task (on a GPU node when the cluster has one).

    info = run_weights(layout, WeightsSpec(model="resnet20", data={"kind": "demo"}, train={"epochs": 3}))
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .run_layout import RunLayout


@dataclass(frozen=True)
class WeightsSpec:
    model: str
    weights: str | None = None  # "torchvision", a file or s3://; None: train the original here
    num_classes: int | None = None
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    train: dict = field(default_factory=dict)  # haloc.train.TrainConfig fields of the pretraining


def run_weights(layout: RunLayout, spec: WeightsSpec, console=None) -> dict:
    """Write the original model's weights into the run (once); returns where they came from."""
    import haloc

    if layout.has_weights():
        return {"source": "store"}
    if spec.weights:
        model = haloc.models.create(spec.model, num_classes=spec.num_classes, weights=spec.weights)
        layout.write_weights(model.state_dict())
        return {"source": spec.weights.split("?", 1)[0]}  # never the URI's options (endpoints, keys)
    import ray

    from workers.pretrain import pretrain_original

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(pretrain_original).options(name="pretrain_original")
    if console is not None:
        console.print(f"no --weights: training the original {spec.model} for {spec.train.get('epochs')} epochs")
    state, res = ray.get(task.remote(spec.model, spec.data, spec.train))
    layout.write_weights(state)
    return {"source": f"trained here for {res['epochs']} epochs", "val": res["val"]}
