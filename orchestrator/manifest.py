"""The run manifest: `<run_id>/manifest.json` in the store, the record that makes a rerun resume.

It holds the run spec (so a rerun with another spec under the same run id is refused), the
software versions that made the artifacts, and each stage's state (pending, running, done, failed)
with its times and a free-form `info` dict. Every change is written at once, atomically.

    manifest = RunManifest.load_or_create(store, "r18-demo", spec, resume_safe=("epochs",))
    if manifest.stage_state("profile") != "done":
        manifest.mark("profile", "running")
        ...
        manifest.mark("profile", "done", rows=1234)
    run_store = manifest.store  # the run's own folder: store.sub(run_id)
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from haloc.errors import BadInputError

from .store import Store, validate_name, validate_run_id

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
STATES = ("pending", "running", "done", "failed", "interrupted")
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def software_versions() -> dict[str, str | None]:
    """Versions of python and the packages that shape the artifacts (from metadata: no imports), and
    the project's git commit."""
    from .env_report import package_versions

    versions = package_versions()
    versions["git_commit"] = _git_commit()
    return versions


def _git_commit() -> str | None:
    """The source checkout's commit (with '+dirty' if modified), or None outside a git checkout."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _as_json(spec: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The spec as plain JSON data (tuples become lists), or BadInputError naming the bad key."""
    if not isinstance(spec, Mapping):
        raise BadInputError(f"run {run_id!r}: the run spec must be a dict, got {type(spec).__name__}")
    try:
        return json.loads(json.dumps(dict(spec), sort_keys=True))
    except (TypeError, ValueError) as err:
        bad = [k for k, v in spec.items() if not _jsonable(v)]
        raise BadInputError(f"run {run_id!r}: run spec key(s) {bad} are not JSON-able ({err}); "
                            "use str/int/float/bool/None, lists and dicts") from None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def spec_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON specs differ (`search.lr`); a whole value if not both dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                diffs.append(path)
            else:
                diffs.extend(spec_differences(old[key], new[key], path))
        return diffs
    return [] if old == new else [prefix or "<spec>"]


def _is_resume_safe(key: str, safe: Iterable[str]) -> bool:
    # "finetune" covers "finetune.epochs"; "finetune.epochs" covers only itself (and below).
    return any(key == s or key.startswith(s + ".") for s in safe)


class RunManifest:
    """One run's manifest; `mark` updates it and writes it back atomically at once."""

    def __init__(self, store: Store, run_id: str, data: dict[str, Any]):
        # Use load_or_create(); this trusts `data`.
        self._root_store = store
        self._run_id = run_id
        self._data = data

    @classmethod
    def load_or_create(cls, store: Store, run_id: str, spec: Mapping[str, Any], *,
                       resume_safe: Iterable[str] = ()) -> RunManifest:
        """Load `<run_id>/manifest.json`, or create it; refuse a changed spec unless resume-safe.

        A rerun may change only keys listed in `resume_safe` (dotted paths; a key covers its
        sub-keys); those changes are recorded in the manifest's `resumes` and the spec updated.
        """
        validate_run_id(run_id)
        new_spec = _as_json(spec, run_id)
        path = f"{run_id}/{MANIFEST_NAME}"
        if not store.exists(path):
            now = _now()
            data = {"format": FORMAT_VERSION, "run_id": run_id, "spec": new_spec,
                    "versions": software_versions(), "created": now, "updated": now,
                    "stages": {}, "resumes": []}
            manifest = cls(store, run_id, data)
            manifest._save()
            return manifest
        data = store.read_json(path)
        if not isinstance(data, dict) or data.get("run_id") != run_id or "spec" not in data:
            raise BadInputError(f"store {store.uri}: {path!r} is not a manifest of run {run_id!r}; "
                                "use a new run id or remove that folder")
        diffs = spec_differences(data["spec"], new_spec)
        safe = tuple(resume_safe)
        unsafe = [d for d in diffs if not _is_resume_safe(d, safe)]
        if unsafe:
            shown = {d: {"stored": _lookup(data["spec"], d), "given": _lookup(new_spec, d)} for d in unsafe}
            raise BadInputError(
                f"run {run_id!r} in {store.uri} was made with a different spec: {json.dumps(shown)}. "
                f"Use a new run id for a new spec (only {sorted(safe) or 'no keys'} may change on resume), "
                "or rerun with the stored spec to resume."
            )
        manifest = cls(store, run_id, data)
        versions = software_versions()
        if diffs or versions != data.get("versions"):
            data.setdefault("resumes", []).append({
                "at": _now(), "changed": diffs,
                "versions": versions if versions != data.get("versions") else None,
            })
            data["spec"] = new_spec
            manifest._save()
        return manifest

    @classmethod
    def read(cls, store: Store, run_id: str) -> dict | None:
        """The manifest of run `run_id` as stored (read only, nothing written), or None if absent."""
        path = f"{validate_run_id(run_id)}/{MANIFEST_NAME}"
        if not store.exists(path):
            return None
        data = store.read_json(path)
        return data if isinstance(data, dict) else None

    @classmethod
    def read_spec(cls, store: Store, run_id: str) -> dict | None:
        """The stored spec of run `run_id`, or None when the run does not exist yet."""
        data = cls.read(store, run_id)
        return data.get("spec") if data else None

    # ---- reading ---------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def store(self) -> Store:
        """The run's own folder in the store: every artifact of this run goes under it."""
        return self._root_store.sub(self._run_id)

    @property
    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._data["spec"])

    @property
    def versions(self) -> dict[str, Any]:
        return dict(self._data["versions"])

    @property
    def created(self) -> str:
        return self._data["created"]

    @property
    def updated(self) -> str:
        return self._data["updated"]

    def stage_state(self, stage: str) -> str:
        """'pending' for a stage never marked."""
        return self._data["stages"].get(stage, {}).get("state", "pending")

    def stage(self, stage: str) -> dict[str, Any]:
        """The stage's record: state, started, finished, attempts, info (a copy)."""
        return copy.deepcopy(self._data["stages"].get(stage, {"state": "pending", "info": {}}))

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        states = {k: v["state"] for k, v in self._data["stages"].items()}
        return f"RunManifest(run_id={self._run_id!r}, store={self._root_store.uri!r}, stages={states})"

    # ---- writing ---------------------------------------------------------------------------

    def mark(self, stage: str, state: str, **info: Any) -> None:
        """Set a stage's state, merge `info` into its info dict, and write the manifest."""
        validate_name(stage, "stage name")  # the run-id rule: stage names may become folder names
        if state not in STATES:
            raise BadInputError(f"stage {stage!r}: state {state!r} is not one of {list(STATES)}")
        bad = [k for k, v in info.items() if not _jsonable(v)]
        if bad:
            raise BadInputError(f"stage {stage!r}: info key(s) {bad} are not JSON-able; pass plain values")
        now = _now()
        rec = self._data["stages"].setdefault(stage, {"state": "pending", "started": None, "finished": None,
                                                       "attempts": 0, "info": {}})
        if state == "running":
            rec["started"], rec["finished"] = now, None
            rec["attempts"] = rec.get("attempts", 0) + 1
        elif state in ("done", "failed", "interrupted"):
            rec["finished"] = now
        elif state == "pending":  # a reset: forget the times, keep the info for the record
            rec["started"], rec["finished"] = None, None
        rec["state"] = state
        rec["info"].update(json.loads(json.dumps(info)))
        self._data["updated"] = now
        self._save()

    def reset(self, stages: Iterable[str], reason: str) -> None:
        """Mark `stages` pending again (their artifacts are gone or out of date); one write."""
        now = _now()
        for stage in stages:
            rec = self._data["stages"].get(stage)
            if rec is not None:
                rec["state"], rec["started"], rec["finished"] = "pending", None, None
                rec.setdefault("info", {})["reset"] = reason
        self._data["updated"] = now
        self._save()

    def _save(self) -> None:
        self._root_store.write_json(f"{self._run_id}/{MANIFEST_NAME}", self._data)


def _lookup(spec: Any, dotted: str) -> Any:
    node = spec
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<absent>"
        node = node[part]
    return node
