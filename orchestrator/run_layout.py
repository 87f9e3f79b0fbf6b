"""A run's layout in the store: every path, and a typed reader and writer of each artifact.

Stages read what earlier stages wrote only through `RunLayout`; no stage imports another.

    <run>/manifest.json                       the run spec and each stage's state (orchestrator.manifest)
    <run>/config.yaml                         the same spec as YAML: `--config` of it reproduces the run
    <run>/weights/original.pt                 the original model every stage starts from
    <run>/weights/pretrain/                   checkpoints of training the original here (no --weights)
    <run>/luts/<hw>.parquet                   latency table of one hardware (hw_profiles.lut)
    <run>/luts/<hw>.calibration.json          its end-to-end calibration (hw_profiles.calibration)
    <run>/search/<experiment>/                Ray Tune experiments (checkpoints, state)
    <run>/search/shared_supernet.pt (+ .json) train once, search many: the shared supernet weights
    <run>/search/trials.json                  one record per search trial
    <run>/selected.json                       the selected architectures (SelectedConfig)
    <run>/finetune/<config>/                  Ray Train's run folder; final.pt + final.json when done
    <run>/validate/<config>.json              accuracy, cost and latency of a fine-tuned model
    <run>/validate/baseline.json              the same of the original model
    <run>/models/<config>/{model.pt, ranks.json, model.onnx}   the exports
    <run>/report.json, <run>/report.html      the report

Every write is one atomic store write (the file whole, or not at all).
"""
from __future__ import annotations

import io
from pathlib import Path

from haloc.errors import BadInputError

from .artifacts import SelectedConfig, as_selected
from .store import Store, validate_name, validate_run_id

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
WEIGHTS = "weights/original.pt"
PRETRAIN_DIR = "weights/pretrain"
LUTS_DIR = "luts"
SEARCH_DIR = "search"
TRIALS = "search/trials.json"
SHARED_SUPERNET = "search/shared_supernet.pt"
SELECTED = "selected.json"
FINETUNE_DIR = "finetune"
VALIDATE_DIR = "validate"
MODELS_DIR = "models"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
DRIVER_LOG = "logs/driver.log"  # Ray's, Tune's and Train's output of every attempt (orchestrator.run_output)
EXPORT_FILES = {"model": "model.pt", "ranks": "ranks.json", "onnx": "model.onnx"}


def open_store(store) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def _save_tensors(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_tensors(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class RunLayout:
    """The artifacts of run `run_id` in `store` (a Store or a URI); `run_id=None` is the store's root
    (the profiling and search functions can be used on a bare store)."""

    def __init__(self, store, run_id: str | None):
        self.store = open_store(store)
        self.run_id = validate_run_id(run_id) if run_id is not None else None

    def path(self, rel: str = "") -> str:
        """`rel` inside the run, relative to the store's root ("" is the run's own folder)."""
        if not self.run_id:
            return rel
        return f"{self.run_id}/{rel}" if rel else self.run_id

    def uri(self, rel: str = "") -> str:
        return self.store.uri_of(self.path(rel)) if rel or self.run_id else self.store.uri

    def sub(self, rel: str) -> Store:
        """A Store rooted at one folder of the run (Ray Tune and Ray Train write their own trees)."""
        return self.store.sub(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.store.exists(self.path(rel))

    # ---- the effective config ----------------------------------------------------------------------------
    def write_config(self, spec: dict) -> str:
        """`<run>/config.yaml`: the run's spec (as the manifest stores it) in the form `--config` reads."""
        import yaml

        head = (f"# The effective config of run {self.run_id} (the spec in its manifest.json), rewritten each time\n"
                f"# the run starts. Reproduce it: python -m pipelines.{spec.get('pipeline')} --config config.yaml\n"
                "# (the same run id and store resume it; flags override this file, e.g. a new --run-id).\n")
        self.store.write_text(self.path(CONFIG), head + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))
        return self.path(CONFIG)

    # ---- weights of the original model ---------------------------------------------------------------
    @property
    def weights(self) -> str:
        return self.path(WEIGHTS)

    def has_weights(self) -> bool:
        return self.store.exists(self.weights)

    def read_weights(self) -> dict:
        if not self.has_weights():
            raise BadInputError(f"model weights {self.uri(WEIGHTS)} do not exist; run the weights stage first")
        return _load_tensors(self.store.read_bytes(self.weights))

    def write_weights(self, state: dict) -> None:
        self.store.write_bytes(self.weights, _save_tensors(state))

    def original_state(self, weights: str | None, model: str | None = None,
                       num_classes: int | None = None) -> dict | None:
        """The original model's state dict from `weights` (None: no weights, the model's own init).

        `weights` is a store path relative to the run (the weights stage writes WEIGHTS there), else
        any source of `haloc.models.create` (a local file, an s3:// URI, "torchvision"; needs
        `model`). Read once on the driver: the workers need no access to the source.
        """
        import os

        if not weights:
            return None
        if "://" not in weights and weights != "torchvision":
            try:
                in_store = self.exists(weights)
            except BadInputError:  # not a store path (absolute, '..'): a local file
                in_store = False
            if in_store:
                return _load_tensors(self.store.read_bytes(self.path(weights)))
            if not os.path.isfile(weights):
                raise BadInputError(f"weights {weights!r} are neither in the store ({self.uri(weights)}) nor a "
                                    "local file; pass a store path relative to the run, a file, an s3:// URI or "
                                    "'torchvision'")
        if model is None:
            raise BadInputError(f"weights {weights!r}: name the model they belong to")
        import haloc

        name = haloc.models.ModelSpec.of(model).name
        return haloc.models.create(name, num_classes=num_classes, weights=weights).state_dict()

    def pretrain_store(self) -> Store:
        return self.sub(PRETRAIN_DIR)

    # ---- LUTs and calibrations ----------------------------------------------------------------------
    def lut(self, hardware: str) -> str:
        return self.path(f"{LUTS_DIR}/{validate_name(hardware, 'hardware profile name')}.parquet")

    def calibration(self, hardware: str) -> str:
        return self.lut(hardware).removesuffix(".parquet") + ".calibration.json"

    def read_lut(self, hardware: str):
        """The LUT table of `hardware` (empty if absent); corrupt or another schema -> BadInputError."""
        from hw_profiles.lut import empty_table, parquet_bytes_to_table

        path = self.lut(hardware)
        if not self.store.exists(path):
            return empty_table()
        return parquet_bytes_to_table(self.store.read_bytes(path), self.store.uri_of(path))

    def write_lut(self, hardware: str, table) -> None:
        self.store.write_parquet(self.lut(hardware), table)

    def latency_table(self, hardware: str):
        from hw_profiles.lut import LatencyTable

        return LatencyTable(hardware, self.read_lut(hardware))

    def read_calibration(self, hardware: str):
        from hw_profiles.calibration import Calibration

        path = self.calibration(hardware)
        return Calibration.from_dict(self.store.read_json(path)) if self.store.exists(path) else None

    def write_calibration(self, calibration) -> None:
        self.store.write_json(self.calibration(calibration.hardware), calibration.to_dict())

    def copy_luts_from(self, other: RunLayout, hardware: list[str]) -> list[str]:
        """Copy `other`'s LUT (and calibration) of each hardware this run lacks; returns the names copied."""
        copied = []
        for hw in hardware:
            if self.store.exists(self.lut(hw)) or not other.store.exists(other.lut(hw)):
                continue
            if other.store.exists(other.calibration(hw)):
                self.store.write_bytes(self.calibration(hw), other.store.read_bytes(other.calibration(hw)))
            self.store.write_bytes(self.lut(hw), other.store.read_bytes(other.lut(hw)))
            copied.append(hw)
        return copied

    # ---- search ---------------------------------------------------------------------------------------
    def search_store(self) -> Store:
        return self.sub(SEARCH_DIR)

    @property
    def shared_supernet(self) -> str:
        return self.path(SHARED_SUPERNET)

    def read_shared_supernet(self) -> dict:
        return _load_tensors(self.store.read_bytes(self.shared_supernet))

    def write_shared_supernet(self, state: dict, info: dict) -> None:
        self.store.write_json(self.shared_supernet.removesuffix(".pt") + ".json", info)
        self.store.write_bytes(self.shared_supernet, _save_tensors(state))  # last: its presence means "trained"

    def read_searched(self, rel: str) -> dict:
        """A trial's searched weights (tensors only), at `rel` inside the run (a selected config's
        `searched_state`)."""
        return _load_tensors(self.store.read_bytes(self.path(rel)))

    def read_trials(self) -> list[dict]:
        if not self.exists(TRIALS):
            raise BadInputError(f"{self.uri(TRIALS)} does not exist; run the search stage first")
        return self.store.read_json(self.path(TRIALS))["trials"]

    def read_trials_doc(self) -> dict | None:
        return self.store.read_json(self.path(TRIALS)) if self.exists(TRIALS) else None

    def write_trials(self, doc: dict) -> None:
        self.store.write_json(self.path(TRIALS), doc)

    # ---- selection ------------------------------------------------------------------------------------
    def read_selected(self) -> list[SelectedConfig]:
        if not self.exists(SELECTED):
            raise BadInputError(f"{self.uri(SELECTED)} does not exist; run the select stage first")
        return as_selected(self.store.read_json(self.path(SELECTED)))

    def write_selected(self, configs, **info) -> str:
        doc = {"run_id": self.run_id, **info, "configs": [c.to_dict() for c in as_selected(configs)]}
        self.store.write_json(self.path(SELECTED), doc)
        return self.path(SELECTED)

    # ---- fine-tune ------------------------------------------------------------------------------------
    def finetune_store(self) -> Store:
        return self.sub(FINETUNE_DIR)

    def final_weights(self, cid: str) -> str:
        return self.path(f"{FINETUNE_DIR}/{validate_name(cid, 'config id')}/final.pt")

    def final_info(self, cid: str) -> str:
        return self.path(f"{FINETUNE_DIR}/{validate_name(cid, 'config id')}/final.json")

    def has_final(self, cid: str) -> bool:
        return self.store.exists(self.final_info(cid))

    def read_final_state(self, cid: str) -> dict:
        """The fine-tuned state dict of a config (tensors only)."""
        path = self.final_weights(cid)
        if not self.store.exists(path):
            raise BadInputError(f"fine-tuned weights {self.store.uri_of(path)} do not exist; run the finetune "
                                "stage first")
        return _load_tensors(self.store.read_bytes(path))

    def read_final_info(self, cid: str) -> dict | None:
        return self.store.read_json(self.final_info(cid)) if self.has_final(cid) else None

    def write_final(self, cid: str, state: dict, info: dict) -> None:
        self.store.write_bytes(self.final_weights(cid), _save_tensors(state))
        self.store.write_json(self.final_info(cid), info)  # last: its presence means "done"

    # ---- validation -----------------------------------------------------------------------------------
    def record(self, cid: str) -> str:
        return self.path(f"{VALIDATE_DIR}/{validate_name(cid, 'config id')}.json")

    @property
    def baseline(self) -> str:
        return self.path(f"{VALIDATE_DIR}/baseline.json")

    def read_record(self, cid: str) -> dict | None:
        return self.store.read_json(self.record(cid)) if self.store.exists(self.record(cid)) else None

    def write_record(self, cid: str, record: dict) -> None:
        self.store.write_json(self.record(cid), record)

    def read_baseline(self, required: bool = True) -> dict | None:
        if self.store.exists(self.baseline):
            return self.store.read_json(self.baseline)
        if required:
            raise BadInputError(f"{self.store.uri_of(self.baseline)} does not exist; run the validate stage first")
        return None

    def write_baseline(self, baseline: dict) -> None:
        self.store.write_json(self.baseline, baseline)

    def export_paths(self, cid: str) -> dict[str, str]:
        base = self.path(f"{MODELS_DIR}/{validate_name(cid, 'config id')}")
        return {kind: f"{base}/{name}" for kind, name in EXPORT_FILES.items()}

    # ---- clearing a stage's artifacts (its rerun starts afresh) --------------------------------------
    def clear(self, stage: str, hardware: list[str] | None = None) -> None:
        """Delete what `stage` wrote. The profile stage's LUTs are kept unless `hardware` names them:
        rows are keyed by layer shape and protocol, and a calibration knows the rows it was made on."""
        paths = {"search": [SEARCH_DIR], "select": [SELECTED], "finetune": [FINETUNE_DIR],
                 "validate": [VALIDATE_DIR, MODELS_DIR], "report": [REPORT_JSON, REPORT_HTML]}.get(stage, [])
        full = [self.path(p) for p in paths]
        if stage == "profile":
            full += [q for hw in hardware or [] for q in (self.lut(hw), self.calibration(hw))]
        for path in full:
            self.store.delete(path)

    # ---- report ---------------------------------------------------------------------------------------
    def report_paths(self) -> dict[str, str]:
        return {"json": self.path(REPORT_JSON), "html": self.path(REPORT_HTML)}

    def read_report(self) -> dict:
        if not self.exists(REPORT_JSON):
            raise BadInputError(f"{self.uri(REPORT_JSON)} does not exist; run the report stage first")
        return self.store.read_json(self.path(REPORT_JSON))

    def write_report(self, report: dict, html: str) -> dict[str, str]:
        paths = self.report_paths()
        self.store.write_json(paths["json"], report)
        self.store.write_text(paths["html"], html)
        return paths

    # ---- the driver's log -----------------------------------------------------------------------------
    def local_log_path(self) -> Path:
        """Where this machine writes the run's log: in the run itself on a local store; for a remote
        store under the state folder ($HALOC_STATE_DIR), copied into the run by `upload_log`."""
        if not self.store.is_remote:
            return Path(self.store.root_path) / self.run_id / DRIVER_LOG
        from .embedded_ray import state_dir

        return state_dir().parent / "logs" / self.run_id / "driver.log"

    def upload_log(self, local: Path) -> str | None:
        """Copy a remote store's run log into the run (the store's URI of it; None for a local store)."""
        if not self.store.is_remote or not Path(local).exists():
            return None
        self.store.write_bytes(self.path(DRIVER_LOG), Path(local).read_bytes())
        return self.uri(DRIVER_LOG)
