"""The run spec: everything one pipeline run needs, as a frozen dataclass with a dict round trip.

Each field is declared once, as a `knob`: its type and default, the first stage that reads it, and
the values it takes (checked here, with the flag named in the message). The presets' own values are
pipelines/presets.py"s; the stages" `inputs` and `RESUME_SAFE` are read from the knobs.

It is stored in the run manifest. A rerun with the same run id may change `RESUME_SAFE` keys
freely (where the cluster is, how progress is shown, how verdicts end the run); a change of any
other key redoes the first stage that reads it and every later one, keeping what came before
(orchestrator.stages: each stage's `inputs`), or is refused when it would change the weights every
stage starts from (model, data).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

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
MAX_SEED = 2**31 - 1  # numpy, torch and Python's random all take it
# What a knob's `stage` may be besides a stage's name: a key a resumed run may change without becoming
# a different run (where the cluster is, how progress is shown, how verdicts end the run), or the run's
# identity itself.
RESUME_SAFE_KEY, IDENTITY = "resume-safe", "identity"


def knob(default=MISSING, *, stage: str, at_least: int | None = None, optional: bool = False,
         within: tuple[float, float, str] | None = None, low_allowed: bool = False,
         choices: tuple[str, ...] | None = None, flag: str | None = None, help: str | None = None,
         to: str | tuple[str, ...] = ()):
    """A RunSpec field, declared once: its default, the first stage that reads it (a change redoes that
    stage and every later one; orchestrator.stages takes its `inputs` from here), and what values it
    takes: an integer `at_least` this (`optional`: or None, the stage's own default), a number `within`
    (low exclusive unless `low_allowed`, high inclusive, the range in words), or one of `choices`.
    `flag` is its command-line form where that is not --field-name. `help`: what the command line's
    --help says of it (the pipelines' command line makes the flag from the knob and adds each preset's default); a knob
    without one has no flag of its own, or one the command line builds by hand. `to`: where the stages'
    own specs take it, "stage.field" or "stage.field.key" (a key of a dict field), one or several:
    `view(spec, stage)` builds those fields, so the mapping is declared here and nowhere else."""
    meta = dict(stage=stage, at_least=at_least, optional=optional, within=within, low_allowed=low_allowed,
                choices=choices, flag=flag, help=help, to=(to,) if isinstance(to, str) else tuple(to))
    return field(default=default, metadata=meta)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    import math

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class RunSpec:
    pipeline: str = knob(stage="weights")  # e.g. "imagenet_resnet18"
    model: str = knob(stage="weights")  # haloc.models name, torchvision:NAME or package.module:factory
    dataset: str = knob(stage="weights")  # "imagenet" | "cifar10" | "factory" | "demo"
    data: str | None = knob(stage="weights")  # local folder, s3:// URI or package.module:factory; None: demo data
    store: str = knob(stage=RESUME_SAFE_KEY)  # local folder or s3:// URI
    run_id: str = knob(stage=IDENTITY)
    preset: str = knob(stage="report")  # "demo" | "quick" | "paper"
    data_description: str | None = knob(None, stage="report")  # what the data is, as the report names it
    hardware: tuple[str, ...] = knob(("cpu", "asic"), stage="profile", to=("search.hardware", "validate.hardware"))
    profile_dirs: tuple[str, ...] = knob((), stage="profile")  # folders of the user's own hardware profiles
    budgets: tuple[float, ...] = knob((0.5,), stage="search",
        help="budgets as fractions of the original cost, e.g. 0.5 0.7", to="search.budgets")
    budget_metric: str = knob("latency", stage="search", choices=BUDGET_METRICS,
        help="what a budget is a fraction of: measured latency, or FLOPs", to="search.budget_metric")
    # the search aims this far below a latency budget (None: each profile's)
    budget_margin: float | None = knob(None, stage="search", to="search.budget_margin")
    seeds: tuple[int, ...] = knob((0,), stage="search",
        help=("search seeds: a trial per seed, the best per budget is selected; blockwise-exact is "
              "deterministic and runs once per hardware and budget, with the first seed (it draws the "
              "held-out batches it measures on)"), to="search.seeds")
    # "torchvision", a file or s3://; None: trained here first
    weights: str | None = knob(None, stage="weights",
        to="weights.weights")
    address: str | None = knob(None, stage=RESUME_SAFE_KEY)  # a running Ray cluster; None: an embedded Ray
    num_classes: int = knob(1000, stage="weights", at_least=2,
        to=("weights.num_classes", "finetune.num_classes", "validate.num_classes"))
    image_size: int = knob(224, stage="weights", at_least=8)
    demo_train: int = knob(512, stage="weights", at_least=8, flag="--demo-size TRAIN")
    demo_val: int = knob(256, stage="weights", at_least=1, flag="--demo-size VAL")
    # without --weights: train the original model first (demo data, or real)
    pretrain_epochs: int = knob(3, stage="weights", at_least=1,
        help="without --weights: epochs of training the original first", to="weights.train.epochs")
    pretrain_lr: float = knob(0.05, stage="weights", within=(0.0, 10.0, "a learning rate in (0, 10], e.g. 0.05"),
        help="without --weights: peak learning rate of training the original", to="weights.train.lr")
    # None: the whole training split every epoch
    pretrain_steps_per_epoch: int | None = knob(None, stage="weights", at_least=1, optional=True,
        help="without --weights: cap on steps per training epoch", to="weights.train.max_steps_per_epoch")
    pretrain_batch_size: int = knob(64, stage="weights", at_least=1,
        help="without --weights: batch size of training the original", to="weights.train.batch_size")
    # at most this many rounds of pretrain_epochs while the original's validation top-1 is below the
    # demo's target or still rising (orchestrator.stages.weights); 1: train once, whatever it reaches
    pretrain_rounds: int = knob(3, stage="weights", at_least=1,
        help=("without --weights: at most this many rounds of --pretrain-epochs while the original's "
              "validation top-1 is below its target or still rising; 1 trains once"), to="weights.max_rounds")
    # profiling
    profile_batch: int | None = knob(None, stage="profile", at_least=1, optional=True)  # None: each profile's
    rank_mode: str = knob("latency", stage="search", choices=RANK_MODES,
        help="candidate ranks from LUT curves or a constant step")
    rank_step: int = knob(16, stage="profile", at_least=1,
        help="the profiling grid's step and the constant-step candidates", to="search.rank_step")
    calibration_samples: int = knob(10, stage="profile", at_least=2,
        help="whole-model measurements that calibrate each LUT")
    # search; "blockwise" / "blockwise-exact": no weight training (docs/method.md)
    search_mode: str = knob("supernet", stage="search", choices=SEARCH_MODES,
        help=("supernet: the paper's search (weight and alpha steps); blockwise: only alpha moves, "
              "on the HOSVD of the original, by each block's output error (about one training epoch "
              "in all); blockwise-exact: that error (relative to what each block's searched layers "
              "add) measured for every candidate and minimised exactly under the budget "
              "(deterministic: one trial per hardware and budget)"), to="search.mode")
    search_epochs: int = knob(10, stage="search", at_least=1,
        help=("epochs of each search trial (blockwise-exact: each adds held-out batches to its error "
              "tables)"), to="search.epochs")
    search_warmup_epochs: int = knob(1, stage="search", at_least=0, to="search.warmup_epochs")
    search_steps_per_epoch: int | None = knob(None, stage="search", at_least=1, optional=True,
        help=("cap on training steps per search epoch; none: the whole split (blockwise-exact takes no "
              "training steps)"), to="search.steps_per_epoch")
    search_batch_size: int = knob(64, stage="search", at_least=1, to="search.batch_size")
    heldout_fraction: float = knob(0.2, stage="search", within=(0.0, 0.95, "a fraction in (0, 0.95], e.g. 0.2"),
                                   flag="--heldout-fraction", to="search.heldout_fraction")
    penalty: str = knob("additive", stage="search", to="search.penalty")
    lam: float = knob(2.0, stage="search", within=(0.0, 1e4, "a positive penalty weight, e.g. 2"), to="search.lam")
    multi_target: bool = knob(False, stage="search", to="search.joint",
        help="one search with a budget on every hardware at once (off: one search per hardware)")
    # fine-tune and validate
    finetune_epochs: int = knob(10, stage="finetune", at_least=1,
        help="epochs of fine-tuning each selected model", to="finetune.train.epochs")
    finetune_steps_per_epoch: int | None = knob(None, stage="finetune", at_least=1, optional=True,
        help="cap on steps per fine-tune epoch; none: the whole split", to="finetune.train.max_steps_per_epoch")
    finetune_batch_size: int = knob(64, stage="finetune", at_least=1, to="finetune.train.batch_size")
    finetune_lr: float = knob(0.01, stage="finetune", within=(0.0, 10.0, "a learning rate in (0, 10], e.g. 0.01"),
        to="finetune.train.lr")
    finetune_workers: int = knob(2, stage=RESUME_SAFE_KEY, at_least=1,
        help="Ray Train workers per fine-tune (data parallel)", to="finetune.num_workers")
    # the student starts from the search's own factors, or "hosvd"
    finetune_init: str = knob("supernet", stage="finetune", choices=FINETUNE_INITS,
        help=("what each selected model's fine-tune starts from: the search's own factors for its "
              "ranks, or a fresh HOSVD of the original's weights"), to="finetune.init")
    # 0 allowed: no distillation
    kd_weight: float = knob(0.5, stage="finetune", within=(0.0, 1.0, "a weight in [0, 1], e.g. 0.5"), low_allowed=True,
        to="finetune.train.kd_weight")
    latency_batch: int = knob(1, stage="validate", at_least=1, to="validate.latency_batch")
    progress: bool = knob(True, stage=RESUME_SAFE_KEY)
    # measured verdicts
    accept_noisy_lut: bool = knob(False, stage=RESUME_SAFE_KEY,
        help="go on with a LUT that failed its quality gate (the report marks it; exit 3)")
    allow_miss: bool = knob(False, stage=RESUME_SAFE_KEY,
        help="exit 0 even when a model missed its budget on measurement (the report still says so)")
    luts_from: str | None = knob(None, stage=RESUME_SAFE_KEY,
        help="start from another run's LUTs (same model, input size and hardware profiles)")
    # local folders Ray ships to every node (the user's model / data factories)
    py_modules: tuple[str, ...] = knob((), stage=RESUME_SAFE_KEY)

    def __post_init__(self):
        for f in fields(self):
            _check_knob(f, getattr(self, f.name))
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


def flag_of(name: str) -> str:
    """The command-line form of RunSpec field `name` (its knob's `flag`, else --field-name)."""
    return knob_of(name).metadata["flag"] or f"--{name.replace('_', '-')}"


def _check_knob(f, value) -> None:
    """BadInputError naming the flag unless `value` is what field `f`'s knob takes."""
    meta, flag = f.metadata, flag_of(f.name)
    if meta.get("choices") and value not in meta["choices"]:
        raise BadInputError(f"{flag} {value!r}: use one of {meta['choices']}")
    if meta.get("at_least") is not None and not (value is None and meta["optional"]):
        low = meta["at_least"]
        if not _is_int(value) or value < low:
            raise BadInputError(f"{flag} {value!r} must be an integer >= {low}; pass one"
                                + (", or leave the flag out" if meta["optional"] else ""))
    if meta.get("within"):
        low, high, what = meta["within"]
        if not _is_number(value) or not (low <= value <= high if meta["low_allowed"] else low < value <= high):
            raise BadInputError(f"{flag} {value!r} must be {what}")


_KNOBS = {f.name: f for f in fields(RunSpec)}
# Keys a resumed run may change without becoming a different run.
RESUME_SAFE = tuple(name for name, f in _KNOBS.items() if f.metadata["stage"] == RESUME_SAFE_KEY)


def stage_inputs(stage: str) -> tuple[str, ...]:
    """The RunSpec fields whose first reader is `stage`, in declaration order (orchestrator.stages)."""
    return tuple(name for name, f in _KNOBS.items() if f.metadata["stage"] == stage)


def knob_of(name: str):
    """The dataclass field of RunSpec field `name`: its type, default and knob metadata."""
    return _KNOBS[name]


def flag_knobs() -> tuple[str, ...]:
    """The RunSpec fields whose command-line flag is made from their knob (they have a `help`)."""
    return tuple(name for name, f in _KNOBS.items() if f.metadata["help"])


def view(spec: RunSpec, stage: str) -> dict:
    """The fields of `stage`'s own spec that come straight from the run spec, by each knob's `to`
    (a "stage.field.key" target fills a dict field): what the stage adds is only what it computes."""
    out: dict = {}
    for name, f in _KNOBS.items():
        for target in f.metadata["to"]:
            where, _, path = target.partition(".")
            if where == stage:
                *parents, leaf = path.split(".")
                node = out
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = getattr(spec, name)
    return out
