"""Run manifests in a real store (local folder and moto S3): create, resume, refuse a changed spec."""
from __future__ import annotations

import pytest

from haloc.errors import BadInputError
from orchestrator.manifest import RunManifest, spec_differences
from orchestrator.store import Store

SPEC = {"model": "resnet20", "dataset": "demo", "hardware": ["cpu", "asic"], "budgets": [0.5, 0.7],
        "search": {"epochs": 2, "lr": 0.01}, "finetune": {"epochs": 3}}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store.open(tmp_path / "store")
    return Store.open(request.getfixturevalue("s3_store_uri"))


def test_create_writes_manifest(store):
    m = RunManifest.load_or_create(store, "run-a", SPEC)
    data = store.read_json("run-a/manifest.json")
    assert data["run_id"] == "run-a" and data["spec"] == SPEC
    for key in ("python", "torch", "torchvision", "ray", "pyarrow", "zigzag", "git_commit"):
        assert key in data["versions"]
    assert data["versions"]["pyarrow"] and data["versions"]["python"]
    assert m.created == m.updated and m.stage_state("profile") == "pending"
    assert m.spec == SPEC and m.store.root_path == store.root_path + "/run-a"


def test_mark_and_resume(store):
    m = RunManifest.load_or_create(store, "run-a", SPEC)
    m.mark("profile", "running", hosts=2)
    m.mark("profile", "done", rows=120)
    m.mark("search", "running")
    m.mark("search", "failed", error="worker died")

    again = RunManifest.load_or_create(store, "run-a", {**SPEC})  # a rerun with the same spec
    assert again.created == m.created
    assert again.stage_state("profile") == "done" and again.stage_state("search") == "failed"
    profile = again.stage("profile")
    assert profile["info"] == {"hosts": 2, "rows": 120}  # info merges across marks
    assert profile["started"] <= profile["finished"] and profile["attempts"] == 1
    again.mark("search", "running")
    search = again.stage("search")
    assert search["attempts"] == 2 and search["finished"] is None
    assert RunManifest.load_or_create(store, "run-a", SPEC).stage_state("search") == "running"


def test_spec_mismatch_refused(store):
    RunManifest.load_or_create(store, "run-a", SPEC)
    changed = {**SPEC, "model": "vgg16", "search": {"epochs": 2, "lr": 0.1}}
    with pytest.raises(BadInputError) as err:
        RunManifest.load_or_create(store, "run-a", changed)
    text = str(err.value)
    assert "model" in text and "search.lr" in text and "new run id" in text
    assert "finetune" not in text  # only the keys that differ
    assert store.read_json("run-a/manifest.json")["spec"] == SPEC  # left as it was


def test_resume_safe_keys_may_change(store):
    RunManifest.load_or_create(store, "run-a", SPEC)
    longer = {**SPEC, "finetune": {"epochs": 10}}
    m = RunManifest.load_or_create(store, "run-a", longer, resume_safe=("finetune.epochs",))
    assert m.spec["finetune"]["epochs"] == 10
    assert m.to_dict()["resumes"][-1]["changed"] == ["finetune.epochs"]
    with pytest.raises(BadInputError, match="search.epochs"):
        RunManifest.load_or_create(store, "run-a", {**longer, "search": {"epochs": 9, "lr": 0.01}},
                                   resume_safe=("finetune",))


def test_two_run_ids_kept_apart(store):
    a = RunManifest.load_or_create(store, "run-a", SPEC)
    b = RunManifest.load_or_create(store, "run-b", {**SPEC, "model": "vgg16"})
    a.mark("profile", "done")
    a.store.write_json("selected.json", {"run": "a"})
    b.store.write_json("selected.json", {"run": "b"})
    assert store.list("run-a") == ["run-a/manifest.json", "run-a/selected.json"]
    assert store.list("run-b") == ["run-b/manifest.json", "run-b/selected.json"]
    assert store.read_json("run-b/selected.json") == {"run": "b"}
    assert RunManifest.load_or_create(store, "run-b", {**SPEC, "model": "vgg16"}).stage_state("profile") == "pending"


@pytest.mark.parametrize("call, match", [
    (lambda s: RunManifest.load_or_create(s, "../up", SPEC), "run id"),
    (lambda s: RunManifest.load_or_create(s, "ok", {"x": object()}), r"\['x'\].*JSON"),
    (lambda s: RunManifest.load_or_create(s, "ok", ["not", "a", "dict"]), "dict"),
    (lambda s: RunManifest.load_or_create(s, "ok", SPEC).mark("profile", "finished"), "pending"),
    (lambda s: RunManifest.load_or_create(s, "ok", SPEC).mark("a/b", "done"), "stage name 'a/b'"),
    (lambda s: RunManifest.load_or_create(s, "ok", SPEC).mark("profile", "done", t=object()), "JSON"),
])
def test_bad_input(tmp_path, call, match):
    with pytest.raises(BadInputError, match=match):
        call(Store.open(tmp_path))


def test_foreign_manifest_refused(tmp_path):
    store = Store.open(tmp_path)
    store.write_json("run-a/manifest.json", {"run_id": "other", "spec": {}})
    with pytest.raises(BadInputError, match="not a manifest of run 'run-a'"):
        RunManifest.load_or_create(store, "run-a", SPEC)


def test_marks_leave_no_temp_files(tmp_path):
    m = RunManifest.load_or_create(Store.open(tmp_path), "run-a", SPEC)
    for state in ("running", "done"):
        m.mark("profile", state)
    assert [p.name for p in (tmp_path / "run-a").iterdir()] == ["manifest.json"]


def test_spec_differences():
    assert spec_differences({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}, "e": 0}) == ["b.c", "b.d", "e"]
    assert spec_differences({"a": [1, 2]}, {"a": [1, 2]}) == []
