"""The fine-tune stage on the real two-node Ray of tests/fixtures/ray_cluster.py: a real TorchTrainer
(2 CPU workers, DDP over gloo) fine-tunes a compressed resnet20 on 128 generated images, stops after
epoch 1 (`max_epochs`), resumes from its checkpoint to epoch 2, and is skipped on a third run.

`finetuned_run` is shared with test_validate.py (memoised per session: one fine-tune for both files).
"""
import io
import os
from pathlib import Path

import pytest
import torch

import haloc
from haloc.errors import BadInputError
from orchestrator.artifacts import config_id
from orchestrator.run_layout import RunLayout
from orchestrator.stages.finetune import FinetuneSpec, run_finetune
from orchestrator.store import Store

RUN = "ft1"
RANKS = {"layer1.0.conv1": 8, "layer2.1.conv2": 16, "layer3.0.conv1": 24, "layer3.2.conv2": 32, "fc": 5}
CONFIG = {"targets": ["cpu"], "budget": 0.6, "seeds": [0, 1], "best_seed": 0, "ranks": RANKS,
          "all_ranks": RANKS, "predicted_cost": {"cpu": 3.0}, "heldout_acc": 0.4, "heldout_acc_mean": 0.35,
          "heldout_acc_std": 0.05, "model": "resnet20"}
DATA = {"kind": "demo", "demo_train": 128, "demo_val": 64, "num_classes": 10}
TRAIN = {"epochs": 2, "lr": 0.02, "batch_size": 32, "log_every": 0, "seed": 3}
SPEC = FinetuneSpec(model="resnet20", data=DATA, train=TRAIN, weights="pretrained.pt", num_workers=2)

_CACHE: dict = {}


def finetuned_run(root: Path) -> dict:
    """Fine-tune CONFIG in a store under `root` in two runs (1 epoch, then resumed to 2); once per session."""
    if "run" in _CACHE:
        return _CACHE["run"]
    store = Store.open(str(root / "store"))
    teacher = haloc.models.create("resnet20", num_classes=10)
    buf = io.BytesIO()
    torch.save(teacher.state_dict(), buf)
    store.write_bytes(f"{RUN}/pretrained.pt", buf.getvalue())
    first = run_finetune(RunLayout(store, RUN), [CONFIG], FinetuneSpec.from_dict(dict(SPEC.to_dict(), max_epochs=1)))
    second = run_finetune(RunLayout(store, RUN), [CONFIG], SPEC)
    _CACHE["run"] = {"store": store, "run_id": RUN, "config": CONFIG, "spec": SPEC, "teacher": teacher,
                     "first": first, "second": second}
    return _CACHE["run"]


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    return finetuned_run(tmp_path_factory.mktemp("finetune"))


def test_config_id_and_spec_checks():
    assert config_id(CONFIG) == "cpu-b0.6"
    assert config_id({"targets": "cpu+asic", "budget": 0.25}) == "cpu_asic-b0.25"
    assert config_id({"config_id": "mine", "targets": ["cpu"], "budget": 1}) == "mine"
    with pytest.raises(BadInputError, match="config id"):
        config_id({"config_id": "../x", "budget": 1})
    with pytest.raises(BadInputError, match=r"unknown key\(s\) \['epoch'\]"):
        FinetuneSpec.from_dict({"epoch": 3})
    with pytest.raises(BadInputError, match="num_workers"):
        FinetuneSpec(num_workers=0)


def test_first_run_stops_after_epoch_one_without_final_files(run):
    rec = run["first"][config_id(CONFIG)]
    assert rec["done"] is False and rec["epoch"] == 1 and rec["epochs"] == 2
    assert [h["epoch"] for h in rec["history"]] == [0]
    assert rec["num_workers"] == 2  # data-parallel over both nodes


def test_second_run_resumes_at_epoch_two_and_writes_final_files(run):
    store, cid = run["store"], config_id(CONFIG)
    first, rec = run["first"][cid], run["second"][cid]
    assert rec["done"] is True and rec["skipped"] is False and rec["epoch"] == 2
    assert [h["epoch"] for h in rec["history"]] == [0, 1]
    assert rec["metrics"]["start_epoch"] == 1  # continued from the checkpoint, did not restart
    assert rec["history"][0]["train"] == first["history"][0]["train"]  # epoch 1 was not run again
    from orchestrator.train_jobs import HEALTH_CHECK_ENV, HEALTH_CHECK_S

    assert os.environ[HEALTH_CHECK_ENV] == HEALTH_CHECK_S  # run_job set it for the controllers it started
    assert 0.0 <= rec["final_val"]["top1"] <= 1.0 and rec["final_val"]["n"] == 64
    weights, info = RunLayout(store, RUN).final_weights(cid), RunLayout(store, RUN).final_info(cid)
    assert store.exists(weights) and store.exists(info)
    assert store.read_json(info)["epoch"] == 2
    # final.pt holds the student without DDP's prefix: it loads strictly into the rebuilt architecture
    state = RunLayout(store, RUN).read_final_state(cid)
    assert not any(k.startswith("module.") for k in state)
    student = haloc.decompose(haloc.models.create("resnet20", num_classes=10), RANKS)
    student.load_state_dict(state)
    # ... and it moved away from its HOSVD initialisation from the teacher
    init = haloc.decompose(run["teacher"], RANKS).state_dict()
    assert any(not torch.equal(init[k], state[k]) for k in state if k.endswith("weight"))


def test_third_run_skips_a_finished_config(run):
    again = run_finetune(RunLayout(run["store"], RUN), [CONFIG], SPEC)
    rec = again[config_id(CONFIG)]
    assert rec["skipped"] is True and rec["epoch"] == 2


@pytest.mark.slow
def test_finished_training_without_final_files_rewrites_them_without_training(run):
    """A crash after the last epoch but before final.json: the rerun trains nothing and writes the files."""
    store, cid = run["store"], config_id(CONFIG)
    weights, info = RunLayout(store, RUN).final_weights(cid), RunLayout(store, RUN).final_info(cid)
    before = store.read_bytes(weights)
    store.delete(info)
    rec = run_finetune(RunLayout(store, RUN), [CONFIG], SPEC)[cid]
    assert rec["skipped"] is False and rec["done"] is True and rec["epoch"] == 2
    assert rec["metrics"]["start_epoch"] == 2 and len(rec["history"]) == 2  # no epoch ran again
    assert store.exists(info)
    state = RunLayout(store, RUN).read_final_state(cid)
    old = torch.load(io.BytesIO(before), weights_only=True)
    torch.testing.assert_close(state, old)


def test_weights_resolve_from_the_store_or_a_file_or_fail_naming_both(tmp_path):
    store = Store.open(str(tmp_path / "store"))
    assert RunLayout(store, "r").original_state(None, "resnet20") is None
    original = haloc.models.create("resnet20", num_classes=10)
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)
    store.write_bytes("r/pre.pt", buf.getvalue())
    (tmp_path / "local.pt").write_bytes(buf.getvalue())
    for source in ("pre.pt", str(tmp_path / "local.pt")):
        state = RunLayout(store, "r").original_state(source, "resnet20", 10)
        torch.testing.assert_close(state, original.state_dict())
    with pytest.raises(BadInputError, match=r"weights 'nope.pt' are neither in the store .*r/nope.pt"):
        RunLayout(store, "r").original_state("nope.pt", "resnet20")


@pytest.mark.slow
def test_fine_tune_on_an_s3_store(ray_cluster, s3_server, s3_store_uri):
    """Ray Train's checkpoints and the final files go to S3 (moto on loopback) through the store's filesystem.

    Keys passed explicitly: the filesystem handed to Ray Train carries them to the workers, whose nodes
    were started before the test put the keys in the driver's environment."""
    store = Store.open(s3_store_uri, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    spec = FinetuneSpec(model="resnet20", data=DATA, train=dict(TRAIN, epochs=1), num_workers=1)
    rec = run_finetune(RunLayout(store, "s3run"), [CONFIG], spec)[config_id(CONFIG)]
    assert rec["done"] is True and rec["epoch"] == 1
    files = store.list("s3run/finetune")
    assert "s3run/finetune/cpu-b0.6/final.pt" in files and "s3run/finetune/cpu-b0.6/final.json" in files
    assert any(f.startswith("s3run/finetune/cpu-b0.6/checkpoint") for f in files)  # Ray Train wrote there too
    state = RunLayout(store, "s3run").read_final_state(config_id(CONFIG))
    haloc.decompose(haloc.models.create("resnet20", num_classes=10), RANKS).load_state_dict(state)


@pytest.mark.slow
def test_an_epoch_ray_train_never_registered_resumes_from_the_snapshot(ray_cluster, tmp_path):
    """An interrupt between the epoch's report and Ray Train's registration of it: Ray Train keeps no
    checkpoint of that epoch, the job's own snapshot does, and the rerun continues after it."""
    import shutil

    store = Store.open(str(tmp_path / "store"))
    buf = io.BytesIO()
    torch.save(haloc.models.create("resnet20", num_classes=10).state_dict(), buf)
    store.write_bytes("snap/pretrained.pt", buf.getvalue())
    config = dict(CONFIG, budget=0.5)
    cid = config_id(config)
    one_epoch = FinetuneSpec.from_dict(dict(SPEC.to_dict(), max_epochs=1))
    first = run_finetune(RunLayout(store, "snap"), [config], one_epoch)[cid]
    job = Path(store.root_path) / "snap" / "finetune" / cid
    assert (job / "snapshot.pt").is_file()
    for path in job.iterdir():  # everything Ray Train recorded of the run goes, the snapshot stays
        if path.name != "snapshot.pt":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    rec = run_finetune(RunLayout(store, "snap"), [config], SPEC)[cid]
    assert rec["done"] is True and rec["metrics"]["start_epoch"] == 1  # not from scratch
    assert [h["epoch"] for h in rec["history"]] == [0, 1]
    assert rec["history"][0]["train"] == first["history"][0]["train"]  # epoch 1 was not run again
    from orchestrator.train_jobs import HEALTH_CHECK_ENV, HEALTH_CHECK_S

    assert os.environ[HEALTH_CHECK_ENV] == HEALTH_CHECK_S  # run_job set it for the controllers it started


def test_the_student_starts_from_the_searched_weights_when_the_search_kept_them(tmp_path):
    """`init="supernet"`: the fine-tune's student is the search's own factors for its ranks; without
    them (a search made before they were kept) HOSVD, and the record says which."""
    from orchestrator.artifacts import SelectedConfig
    from orchestrator.stages.finetune import _student_start
    from workers.finetune_loop import build_models, loop_config

    store = Store.open(str(tmp_path))
    layout = RunLayout(store, RUN)
    teacher = haloc.models.create("resnet20", num_classes=10)
    searched = haloc.decompose(teacher, RANKS)
    with torch.no_grad():
        for p in searched.parameters():
            p.add_(0.5)  # unlike any HOSVD of the teacher
    buf = io.BytesIO()
    torch.save(searched.state_dict(), buf)
    store.write_bytes(f"{RUN}/search/searched/t1.pt", buf.getvalue())
    kept = SelectedConfig.from_dict(dict(CONFIG, searched_state="search/searched/t1.pt"), "resnet20")
    init, state = _student_start(layout, kept, "supernet")
    assert init == "supernet"
    config = loop_config("resnet20", RANKS, DATA, TRAIN, 10, model_state=teacher.state_dict(), student_state=state)
    _, student = build_models(config)
    for name, value in searched.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    assert _student_start(layout, kept, "hosvd") == ("hosvd", None)
    none_kept = SelectedConfig.from_dict(CONFIG, "resnet20")
    assert _student_start(layout, none_kept, "supernet") == ("hosvd (the search kept no weights)", None)
    _, fresh = build_models(loop_config("resnet20", RANKS, DATA, TRAIN, 10, model_state=teacher.state_dict()))
    key = next(iter(searched.state_dict()))
    assert not torch.equal(fresh.state_dict()[key], searched.state_dict()[key])  # HOSVD of the teacher instead
    with pytest.raises(BadInputError, match="init='random'"):
        FinetuneSpec(init="random")


def test_train_jobs_poll_their_workers_often_through_the_variable_ray_propagates(monkeypatch):
    """The shorter health-check interval reaches Ray Train's controller only because Ray copies this
    variable from the driver: a Ray that stops doing so would quietly bring back the 2 s waits."""
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    from orchestrator.train_jobs import HEALTH_CHECK_ENV, HEALTH_CHECK_S

    assert HEALTH_CHECK_ENV in ENV_VARS_TO_PROPAGATE and float(HEALTH_CHECK_S) < 2.0
