"""The run spec: everything one pipeline run needs, as a frozen dataclass with a dict round trip.

It is stored in the run manifest. A rerun with the same run id may change `RESUME_SAFE` keys
freely (where the cluster is, how progress is shown, how verdicts end the run); a change of any
other key redoes the first stage that reads it and every later one, keeping what came before
(orchestrator.stages: each stage's `inputs`), or is refused when it would change the weights every
stage starts from (model, data).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from haloc.config import from_dict_strict
from haloc.errors import BadInputError

BUDGET_METRICS = ("latency", "flops")
RANK_MODES = ("latency", "step")
# Keys a resumed run may change without becoming a different run.
RESUME_SAFE = ("address", "store", "progress", "finetune_workers", "accept_noisy_lut", "allow_miss", "luts_from")
# Spec fields whose CLI flag is not simply --field-name.
_FLAGS = {"demo_train": "--demo-size TRAIN", "demo_val": "--demo-size VAL"}


@dataclass(frozen=True)
class RunSpec:
    pipeline: str  # e.g. "imagenet_resnet18"
    model: str  # haloc.models name
    dataset: str  # "imagenet" | "cifar10" | "demo"
    data: str | None  # local folder or s3:// URI; None with the demo data set
    store: str  # local folder or s3:// URI
    run_id: str
    preset: str  # "demo" | "paper" | "custom"
    hardware: tuple[str, ...] = ("cpu", "asic")
    profile_dirs: tuple[str, ...] = ()  # folders of the user's own hardware profiles (*.yaml)
    budgets: tuple[float, ...] = (0.5,)  # fractions of the original model's latency (or FLOPs)
    budget_metric: str = "latency"
    seeds: tuple[int, ...] = (0,)
    weights: str | None = None  # "torchvision", a file or s3://; None: random init (demo)
    address: str | None = None  # a running Ray cluster; None: embedded local Ray
    num_classes: int = 1000
    image_size: int = 224
    demo_train: int = 512
    demo_val: int = 256
    pretrain_epochs: int = 3  # without --weights: train the original model first (demo data, or real)
    pretrain_lr: float = 0.05
    # profiling
    profile_batch: int | None = None  # None: each hardware profile's own batch size
    rank_mode: str = "latency"  # candidate ranks from the LUT curves, or a constant step
    rank_step: int = 16  # profiling grid step and the constant-step candidates
    calibration_samples: int = 10
    # search
    search_epochs: int = 10
    search_warmup_epochs: int = 1
    search_steps_per_epoch: int | None = None
    search_batch_size: int = 64
    heldout_fraction: float = 0.2
    penalty: str = "additive"
    lam: float = 2.0
    multi_target: bool = False  # one trial with a budget on every hardware target at once
    # fine-tune and validate
    finetune_epochs: int = 10
    finetune_steps_per_epoch: int | None = None
    finetune_batch_size: int = 64
    finetune_lr: float = 0.01
    finetune_workers: int = 2
    kd_weight: float = 0.5
    latency_batch: int = 1
    progress: bool = True
    # measured verdicts
    accept_noisy_lut: bool = False  # go on with a LUT that failed its quality gate (the report says so; exit 3)
    allow_miss: bool = False  # exit 0 even when a model missed its budget on measurement
    luts_from: str | None = None  # start from another run's LUTs (same model, input size and hardware profiles)

    def __post_init__(self):
        if self.budget_metric not in BUDGET_METRICS:
            raise BadInputError(f"--budget-metric {self.budget_metric!r}: use one of {BUDGET_METRICS}")
        if self.rank_mode not in RANK_MODES:
            raise BadInputError(f"rank mode {self.rank_mode!r}: use one of {RANK_MODES}")
        if not self.budgets or any(not 0 < b <= 1.5 for b in self.budgets):
            raise BadInputError(f"--budgets {list(self.budgets)}: each budget is a fraction of the original "
                                "model's cost in (0, 1.5], e.g. --budgets 0.5 0.7")
        if not self.seeds:
            raise BadInputError("--seeds needs at least one seed")
        if not self.hardware:
            raise BadInputError("--hardware needs at least one hardware profile (see `python -m hw_profiles`)")
        for name in ("search_epochs", "finetune_epochs", "search_batch_size", "finetune_batch_size",
                     "finetune_workers", "rank_step", "demo_train", "demo_val", "latency_batch"):
            if getattr(self, name) < 1:
                flag = _FLAGS.get(name, f"--{name.replace('_', '-')}")
                raise BadInputError(f"{flag} {getattr(self, name)} must be >= 1; pass a positive integer")
        if not 0 < self.heldout_fraction < 1:
            raise BadInputError(f"held-out fraction {self.heldout_fraction} must lie in (0, 1)")

    @property
    def is_demo(self) -> bool:
        return self.dataset == "demo"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return from_dict_strict(cls, kwargs, "run spec")
