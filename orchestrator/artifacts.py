"""Typed values of a run's artifacts that more than one stage reads: the selected architecture and
the name of a group of cost targets.

A target group is what one search trial optimises: one hardware ("cpu"), several at once
("cpu+asic", a budget on each) or ("flops",). Its key (`targets_key`) is the Tune config value and
the join key of trials, selections and validation records; `config_id` makes a folder name of it.

    config = SelectedConfig.from_dict(json.loads(...))
    config.key          # "cpu+asic"
    config.config_id    # "cpu_asic-b0.5": <run>/finetune/<id>/, <run>/models/<id>/, <run>/validate/<id>.json
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from haloc.errors import BadInputError

from .store import validate_name

TARGETS_SEPARATOR = "+"  # in keys ("cpu+asic"); "_" in config ids, which are folder names


def targets_key(targets) -> str:
    """"cpu", "cpu+asic", "flops" from a sequence of names (a key is returned as it is)."""
    if isinstance(targets, str):
        return targets
    names = [str(t) for t in targets]
    if not names:
        raise BadInputError("a target group names no hardware; give at least one (e.g. ['cpu'])")
    return TARGETS_SEPARATOR.join(names)


def parse_targets(targets) -> tuple[str, ...]:
    """The names of a target group, from its key or a sequence."""
    names = tuple(targets.split(TARGETS_SEPARATOR)) if isinstance(targets, str) else tuple(targets)
    if not names or not all(names):
        raise BadInputError(f"target group {targets!r} names no hardware; give e.g. 'cpu' or ['cpu', 'asic']")
    return names


def make_config_id(targets, budget: float) -> str:
    """`<targets joined by _>-b<budget>`: "cpu-b0.5", "cpu_asic-b0.3"; a single safe path segment."""
    cid = f"{'_'.join(parse_targets(targets))}-b{float(budget):g}"
    return validate_name(cid, "config id", example="cpu-b0.5")


def config_id(config) -> str:
    """The config id of a SelectedConfig or of any dict naming targets (or hardware) and a budget."""
    if isinstance(config, SelectedConfig):
        return config.config_id
    if config.get("config_id"):
        return validate_name(config["config_id"], "config id", example="cpu-b0.5")
    targets = config.get("targets", config.get("hardware"))
    if not targets or "budget" not in config:
        raise BadInputError(f"selected config {config!r} names no targets and budget; rerun the select stage")
    return make_config_id(targets, config["budget"])


@dataclass(frozen=True)
class SelectedConfig:
    """One selected architecture: the best search trial of a (target group, budget) cell across seeds.

    `ranks` is the ranks JSON content (absent layer = kept whole); `all_ranks` names every searched
    layer (max_rank = kept whole), see haloc.decomposition's rank rule.
    """

    model: str
    targets: tuple[str, ...]
    budget: float
    ranks: dict
    all_ranks: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    best_seed: int | None = None
    trial_id: str | None = None
    predicted_cost: dict = field(default_factory=dict)  # per cost table, of the selection
    budget_abs: dict = field(default_factory=dict)  # per cost table, in its unit
    aimed_abs: dict = field(default_factory=dict)  # per cost table, what the search aimed at (a margin below)
    within_budget: bool = True  # the LUT's (or the FLOPs count's) view, not a measurement
    heldout_acc: float | None = None
    heldout_acc_mean: float | None = None
    heldout_acc_std: float | None = None
    predicted_cost_over_seeds: dict = field(default_factory=dict)  # {table: {"mean", "std"}}
    rank_agreement: float | None = None
    lam: float | None = None
    beta: float | None = None
    search: dict = field(default_factory=dict)  # the search's own evidence (per-epoch curves, per seed)
    searched_state: str | None = None  # run path of the best trial's searched weights (the fine-tune's start)
    id: str | None = None  # overrides the derived config id

    def __post_init__(self):
        object.__setattr__(self, "targets", parse_targets(self.targets))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not isinstance(self.budget, (int, float)) or isinstance(self.budget, bool) \
                or not math.isfinite(self.budget) \
                or self.budget <= 0:
            raise BadInputError(f"selected config {self.key!r}: budget {self.budget!r} must be a positive number")
        if not isinstance(self.ranks, dict):
            raise BadInputError(f"selected config {self.key!r}: ranks must be a dict {{layer: rank}}")
        self.config_id  # noqa: B018 - validates the id before it becomes a path

    @property
    def key(self) -> str:
        return targets_key(self.targets)

    @property
    def budget_metric(self) -> str:
        """"flops" for the FLOPs target group, else "latency" (fractions of measured latency)."""
        return "flops" if self.targets == ("flops",) else "latency"

    @property
    def config_id(self) -> str:
        return validate_name(self.id, "config id", example="cpu-b0.5") if self.id else \
            make_config_id(self.targets, self.budget)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"], d["seeds"] = list(self.targets), list(self.seeds)
        d["config_id"] = d.pop("id") or self.config_id
        d["budget_metric"] = self.budget_metric  # for readers of selected.json; derived on reading
        return d

    @classmethod
    def from_dict(cls, data: dict, model: str | None = None) -> SelectedConfig:
        """From selected.json's entries (or a hand-written dict: `hardware` may stand for `targets`,
        `config_id` for `id`); unknown keys are refused by name."""
        if isinstance(data, SelectedConfig):
            return data
        if not isinstance(data, dict):
            raise BadInputError(f"a selected config must be a dict, got {type(data).__name__}; pass selected.json's "
                                "entries")
        d = dict(data)
        if "targets" not in d and "hardware" in d:
            d["targets"] = d.pop("hardware")
        d.pop("hardware", None)
        d.pop("budget_metric", None)  # derived from the targets
        if "config_id" in d:
            d["id"] = d.pop("config_id")
        if model is not None:
            d.setdefault("model", model)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInputError(f"selected config: unknown key(s) {unknown}; allowed: {sorted(known)}")
        for key in ("targets", "budget", "ranks", "model"):
            if key not in d:
                raise BadInputError(f"selected config {data!r} lacks {key!r}; rerun the select stage")
        return cls(**d)


def as_selected(configs, model: str | None = None) -> list[SelectedConfig]:
    """SelectedConfigs from a list (of dicts or SelectedConfigs) or selected.json's content."""
    if isinstance(configs, dict) and isinstance(configs.get("configs"), list):
        configs = configs["configs"]
    if not isinstance(configs, (list, tuple)):
        raise BadInputError(f"configs must be a list of selected configs or selected.json's content, got "
                            f"{type(configs).__name__}; pass select's output")
    return [SelectedConfig.from_dict(c, model) for c in configs]
