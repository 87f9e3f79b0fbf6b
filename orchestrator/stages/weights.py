"""The weights stage: the original model's weights in the run, `<run>/weights/original.pt`.

Every later stage starts from that file. It comes from `--weights` (torchvision's published
weights, a local file or an s3:// URI), or, without weights (the demo), from training the original
model here first: a Ray Train job of the project's one training loop (no teacher, cross-entropy
only), checkpointed after every epoch under `<run>/weights/pretrain/`, so an interrupted training
resumes at its last epoch.

An original trained here is the baseline every compressed model is compared with, so it trains until
its validation top-1 is stable: after its `epochs`, another round (a fresh cosine cycle of as many
epochs, from the round's weights, its own job `original-round<k>`) follows while the top-1 is below
`target_top1` (the demo data's 0.9) or still rose by STABLE_GAIN or more in the round's last epoch,
`max_rounds` rounds at most. The info says how it ended (`original_training`), and the run's
terminal and report say so: an original that did not settle is a weak baseline, not a result.

    info = run_weights(layout, WeightsSpec(model="resnet20", data={"kind": "demo"}, train={"epochs": 3}))
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..run_layout import RunLayout
from ..train_jobs import Workers, run_job

PRETRAIN_JOB = "original"
DEMO_TARGET_TOP1 = 0.9  # the demo's generated data is easy: an original below this is no baseline
STABLE_GAIN = 0.02  # validation top-1 rising by less than this in an epoch: it has settled
MAX_ROUNDS = 3


@dataclass(frozen=True)
class WeightsSpec:
    model: str | dict  # a registry name or a haloc.models.ModelSpec's dict form
    weights: str | None = None  # "torchvision", a file or s3://; None: train the original here
    num_classes: int | None = None
    data: dict = field(default_factory=lambda: {"kind": "demo"})  # haloc.data.DataConfig fields
    train: dict = field(default_factory=dict)  # haloc.train.TrainConfig fields of the training
    workers: Workers = field(default_factory=lambda: Workers(num_workers=1))
    target_top1: float | None = None  # train more rounds while the validation top-1 is below it
    max_rounds: int = MAX_ROUNDS


def settled(val_top1: list, target: float | None) -> bool:
    """Whether a training whose validation top-1 went `val_top1` (per epoch) is done: it reached
    `target` (if any) and rose by less than STABLE_GAIN in its last epoch."""
    if not val_top1 or val_top1[-1] is None:
        return False
    rising = len(val_top1) >= 2 and val_top1[-2] is not None and val_top1[-1] - val_top1[-2] >= STABLE_GAIN
    return not rising and (target is None or val_top1[-1] >= target)


def run_weights(layout: RunLayout, spec: WeightsSpec, show=None) -> dict:
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
    if show is not None:
        target = (f" (until validation top-1 >= {spec.target_top1:g} and stable)" if spec.target_top1
                  else " (until stable)")
        show(f"no --weights: training the original {name} for {train['epochs']} epochs{target}, "
                      f"checkpoints in {layout.uri('weights/pretrain')}")
    model_state, val_top1, epochs, resumed = None, [], 0, 0
    for k in range(max(1, spec.max_rounds)):
        job = PRETRAIN_JOB if k == 0 else f"{PRETRAIN_JOB}-round{k + 1}"
        # each round its own data order (epochs are seeded from (seed, epoch))
        loop = loop_config(spec.model, {}, spec.data, dict(train, seed=train["seed"] + k), spec.num_classes,
                           model_state=model_state,
                           label=("training the original", name))
        state, metrics = run_job(layout.pretrain_store(), job, loop, spec.workers, f"training the original {name}")
        val_top1 += [(entry.get("val") or {}).get("top1") for entry in state.history]
        epochs += state.epoch
        resumed = resumed or metrics.get("start_epoch", 0)
        model_state = state.model
        if settled(val_top1, spec.target_top1):
            break
        if show is not None and k + 1 < spec.max_rounds:
            show(f"the original's validation top-1 is {_top1(val_top1)} after {epochs} epochs, not yet "
                          f"{'stable' if spec.target_top1 is None else f'stable at {spec.target_top1:g} or more'}: "
                          f"another {train['epochs']} epochs")
    layout.write_weights(model_state)
    training = {"epochs": epochs, "val_top1": val_top1[-1] if val_top1 else None, "target_top1": spec.target_top1,
                "stable": settled(val_top1, spec.target_top1), "history": val_top1, "rounds": k + 1}
    if show is not None:
        how = ("stable" if training["stable"] else "[bold red]NOT stable or below its target[/]: a weak baseline; "
               "compare the compressed models with care")
        show(f"the original {name}: validation top-1 {_top1(val_top1)} after {epochs} epochs ({how})")
    last = state.history[-1] if state.history else {}
    return {"source": f"trained here for {epochs} epochs", "val": last.get("val"), "resumed_at_epoch": resumed,
            "original_training": training}


def _top1(val_top1: list) -> str:
    return f"{val_top1[-1]:.3f}" if val_top1 and val_top1[-1] is not None else "unknown"
