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
FINETUNE_INITS = ("supernet", "hosvd")
# haloc.SEARCH_MODES (a test keeps them equal; no torch import here)
SEARCH_MODES = ("supernet", "blockwise", "blockwise-exact")
# Modes with nothing random in their search itself: the seed only draws the held-out batches they measure
# their errors on (order, and augmentations on real data), so they run once per (targets, budget), with the
# first seed (orchestrator.stages.search.SearchSpec.trial_seeds).
DETERMINISTIC_SEARCH_MODES = ("blockwise-exact",)
# Keys a resumed run may change without becoming a different run.
RESUME_SAFE = ("address", "store", "progress", "finetune_workers", "accept_noisy_lut", "allow_miss", "luts_from",
               "py_modules")
# Spec fields whose CLI flag is not simply --field-name.
_FLAGS = {"demo_train": "--demo-size TRAIN", "demo_val": "--demo-size VAL", "heldout_fraction": "--heldout-fraction"}
MAX_SEED = 2**31 - 1  # numpy, torch and Python's random all take it
# integer fields and their smallest value; _OPTIONAL may also be None (the default of their stage)
_AT_LEAST = {"search_epochs": 1, "search_warmup_epochs": 0, "finetune_epochs": 1, "search_batch_size": 1,
             "finetune_batch_size": 1, "finetune_workers": 1, "rank_step": 1, "demo_train": 8, "demo_val": 1,
             "latency_batch": 1, "calibration_samples": 2, "pretrain_epochs": 1, "num_classes": 2, "image_size": 8,
             "search_steps_per_epoch": 1, "finetune_steps_per_epoch": 1, "profile_batch": 1,
             "pretrain_steps_per_epoch": 1, "pretrain_batch_size": 1,
             "pretrain_rounds": 1}
_OPTIONAL = {"search_steps_per_epoch", "finetune_steps_per_epoch", "profile_batch", "pretrain_steps_per_epoch"}
# number fields: (low, high, the allowed range in words); low is exclusive except for kd_weight
_RANGES = {"heldout_fraction": (0.0, 0.95, "a fraction in (0, 0.95], e.g. 0.2"),
           "pretrain_lr": (0.0, 10.0, "a learning rate in (0, 10], e.g. 0.05"),
           "finetune_lr": (0.0, 10.0, "a learning rate in (0, 10], e.g. 0.01"),
           "lam": (0.0, 1e4, "a positive penalty weight, e.g. 2"),
           "kd_weight": (0.0, 1.0, "a weight in [0, 1], e.g. 0.5")}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    import math

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _flag(name: str) -> str:
    return _FLAGS.get(name, f"--{name.replace('_', '-')}")


@dataclass(frozen=True)
class RunSpec:
    pipeline: str  # e.g. "imagenet_resnet18"
    model: str  # haloc.models name, torchvision:NAME or package.module:factory
    dataset: str  # "imagenet" | "cifar10" | "factory" | "demo"
    data: str | None  # local folder, s3:// URI or package.module:factory; None with the demo data set
    store: str  # local folder or s3:// URI
    run_id: str
    preset: str  # "demo" | "quick" | "paper"
    data_description: str | None = None  # what the data is, as the report names it (read from the data)
    hardware: tuple[str, ...] = ("cpu", "asic")
    profile_dirs: tuple[str, ...] = ()  # folders of the user's own hardware profiles (*.yaml)
    budgets: tuple[float, ...] = (0.5,)  # fractions of the original model's latency (or FLOPs)
    budget_metric: str = "latency"
    budget_margin: float | None = None  # the search aims this far below a latency budget (None: each profile's)
    seeds: tuple[int, ...] = (0,)
    weights: str | None = None  # "torchvision", a file or s3://; None: random init (demo)
    address: str | None = None  # a running Ray cluster; None: embedded local Ray
    num_classes: int = 1000
    image_size: int = 224
    demo_train: int = 512
    demo_val: int = 256
    pretrain_epochs: int = 3  # without --weights: train the original model first (demo data, or real)
    pretrain_lr: float = 0.05
    pretrain_steps_per_epoch: int | None = None  # None: the whole training split every epoch
    pretrain_batch_size: int = 64
    # at most this many rounds of pretrain_epochs while the original's validation top-1 is below the
    # demo's target or still rising (orchestrator.stages.weights); 1: train once, whatever it reaches
    pretrain_rounds: int = 3
    # profiling
    profile_batch: int | None = None  # None: each hardware profile's own batch size
    rank_mode: str = "latency"  # candidate ranks from the LUT curves, or a constant step
    rank_step: int = 16  # profiling grid step and the constant-step candidates
    calibration_samples: int = 10
    # search
    search_mode: str = "supernet"  # "blockwise" / "blockwise-exact": no weight training (docs/method.md)
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
    finetune_init: str = "supernet"  # the student starts from the search's own factors, or "hosvd"
    kd_weight: float = 0.5
    latency_batch: int = 1
    progress: bool = True
    # measured verdicts
    accept_noisy_lut: bool = False  # go on with a LUT that failed its quality gate (the report says so; exit 3)
    allow_miss: bool = False  # exit 0 even when a model missed its budget on measurement
    luts_from: str | None = None  # start from another run's LUTs (same model, input size and hardware profiles)
    py_modules: tuple[str, ...] = ()  # local folders Ray ships to every node (the user's model / data factories)

    def __post_init__(self):
        if self.budget_metric not in BUDGET_METRICS:
            raise BadInputError(f"--budget-metric {self.budget_metric!r}: use one of {BUDGET_METRICS}")
        if self.search_mode not in SEARCH_MODES:
            raise BadInputError(f"--search-mode {self.search_mode!r}: use one of {SEARCH_MODES}")
        if self.finetune_init not in FINETUNE_INITS:
            raise BadInputError(f"--finetune-init {self.finetune_init!r}: use one of {FINETUNE_INITS}")
        if self.rank_mode not in RANK_MODES:
            raise BadInputError(f"--rank-mode {self.rank_mode!r}: use one of {RANK_MODES}")
        if not self.budgets or any(not _is_number(b) or not 0 < b <= 1.5 for b in self.budgets):
            raise BadInputError(f"--budgets {list(self.budgets)}: each budget is a fraction of the original "
                                "model's cost in (0, 1.5], e.g. --budgets 0.5 0.7")
        if self.budget_margin is not None and (not _is_number(self.budget_margin)
                                               or not 0 <= self.budget_margin <= 0.5):
            raise BadInputError(f"--budget-margin {self.budget_margin!r} must be a fraction in [0, 0.5], e.g. 0.05, "
                                "or leave the flag out (each hardware profile's own margin)")
        if len(set(self.budgets)) != len(self.budgets):
            raise BadInputError(f"--budgets {list(self.budgets)} names a budget twice; give each once")
        if not self.seeds:
            raise BadInputError("--seeds needs at least one seed")
        bad_seeds = [x for x in self.seeds if not _is_int(x) or not 0 <= x <= MAX_SEED]
        if bad_seeds or len(set(self.seeds)) != len(self.seeds):
            raise BadInputError(f"--seeds {list(self.seeds)}: give distinct integers in 0..{MAX_SEED} "
                                "(the range every random generator of the run takes)")
        if not self.hardware or len(set(self.hardware)) != len(self.hardware):
            raise BadInputError(f"--hardware {list(self.hardware)}: name each hardware profile once "
                                "(`python -m pipelines.env` lists them)")
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not _is_int(value) or value < low:
                raise BadInputError(f"{_flag(name)} {value!r} must be an integer >= {low}; pass one"
                                    + (", or leave the flag out" if name in _OPTIONAL else ""))
        for name, (low, high, what) in _RANGES.items():
            value = getattr(self, name)
            if not _is_number(value) or not (low < value <= high if name != "kd_weight" else low <= value <= high):
                raise BadInputError(f"{_flag(name)} {value!r} must be {what}")
        if self.search_warmup_epochs >= self.search_epochs:
            raise BadInputError(f"--search-warmup-epochs {self.search_warmup_epochs} leaves no epoch of the "
                                f"{self.search_epochs} search epochs to move the architecture; make it smaller "
                                "than --search-epochs")

    @property
    def is_demo(self) -> bool:
        return self.dataset == "demo"

    @property
    def model_spec(self) -> dict:
        """The model as every stage rebuilds it: its class count and the input size of the data
        (haloc.models.ModelSpec's dict form)."""
        return {"name": self.model, "num_classes": self.num_classes,
                "input_size": [3, self.image_size, self.image_size]}

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return from_dict_strict(cls, kwargs, "run spec")
