"""Security: credentials never reach artifacts or logs; nothing but tensors is unpickled from weights;
names are validated before they become paths; an embedded Ray listens on loopback only."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from haloc.errors import BadInputError
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY

from .helpers import ROOT, SMALL, run_cli

# The keys as they could appear: raw, URL-encoded (the secret has '/' and '+'), or cut at those.
NEEDLES = [ACCESS_KEY, SECRET_KEY, SECRET_KEY.replace("/", "%2F").replace("+", "%2B"), "NotARealKey0123456789xy",
           "FakeSecret"]
PACKAGES = ("haloc", "hw_profiles", "workers", "orchestrator", "pipelines")


def _leaks(name: str, data: bytes) -> list[str]:
    return [f"{name}: {n}" for n in NEEDLES if n.encode() in data]


def _scan_tree(root: Path, since: float | None = None) -> tuple[list[str], int]:
    """(leaks, files scanned) under `root`; sockets and other non-files skipped."""
    leaks, count = [], 0
    if not root.exists():
        return leaks, count
    for path in root.rglob("*"):
        try:
            if not path.is_file() or path.is_symlink() or (since and path.stat().st_mtime < since):
                continue
            data = path.read_bytes()
        except OSError:
            continue
        count += 1
        leaks += _leaks(str(path), data)
    return leaks, count


@pytest.mark.slow
def test_fake_keys_from_the_environment_never_reach_the_store_files_or_logs(ray_cluster, s3_server, tmp_path):
    """A whole small pipeline on an S3 store (moto), keys only in the environment of the CLI and of the
    Ray nodes (tests/fixtures/ray_cluster.py); then every object, every file the run wrote locally and
    the CLI's output are searched for the keys."""
    bucket = s3_server.make_bucket(f"sec-{uuid.uuid4().hex[:10]}")
    store = s3_server.uri(bucket, "runs")  # endpoint in the query, no keys
    assert ray_cluster.env["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY  # the nodes have the keys
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(ray_cluster.env, TMPDIR=str(tmp), HALOC_DATA_CACHE=str(tmp_path / "cache"))
    started = time.time()
    proc = run_cli([*SMALL, "--store", store, "--run-id", "sec", "--hardware", "asic", "--rank-step", "32",
                    "--address", ray_cluster.address], env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    # the run really went to S3: manifest, LUT, Tune experiment, fine-tune, models, report
    for part in ("sec/manifest.json", "sec/luts/asic.parquet", "sec/search/", "sec/finetune/", "sec/report.json"):
        assert any(part in k for k in keys), (part, keys[:20])
    leaks = []
    for key in keys:
        leaks += _leaks(f"s3://{bucket}/{key}", client.get_object(Bucket=bucket, Key=key)["Body"].read())
    leaks += _leaks("stdout", proc.stdout.encode()) + _leaks("stderr", proc.stderr.encode())
    scanned = len(keys)
    # The session's Ray temp dir also holds other tests' experiments, some of which pass keys explicitly
    # on purpose (tests/orchestrator): only what changed during this run is this run's.
    roots = [(tmp_path, None), (ray_cluster.temp_dir, started), (Path(os.environ["HALOC_ZIGZAG_CACHE"]).parent, None)]
    for root, since in roots:
        found, n = _scan_tree(root, since=since)
        leaks, scanned = leaks + found, scanned + n
    for log in ray_cluster.temp_dir.parent.glob(f"{ray_cluster.temp_dir.name}.*.log"):
        leaks += _leaks(str(log), log.read_bytes())
    found, n = _scan_tree(Path.home() / "ray_results", since=started)  # Tune's default, if it used it
    leaks += found
    assert scanned > len(keys) + 20  # the scan did read the run's files
    assert not leaks, leaks


# ---- nothing unpickled beyond tensors ---------------------------------------------------------------

def _calls(tree: ast.AST, dotted: str):
    mod, _, fn = dotted.rpartition(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == fn \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == mod:
            yield node


# Every reader of tensors in the packages: weights files, training states, search states, run artifacts.
TENSOR_READERS = {"haloc/models/weights.py", "haloc/train.py", "workers/search_trainable.py",
                  "orchestrator/run_layout.py"}


# The one unpickler: datasets a user handed to pipelines.api.compress, loaded only where the data is
# named pickled:<folder> (never found by looking into a folder: test below).
EXPLICIT_UNPICKLERS = {("haloc/data.py", "pickle.load")}


def test_a_datasets_pkl_in_a_plain_data_folder_is_never_unpickled(tmp_path):
    import pickle

    from tests.fixtures.fake_data import write_fake_imagefolder

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    folder = write_fake_imagefolder(tmp_path / "data", classes=2, per_class=2, size=16)
    (folder / "datasets.pkl").write_bytes(pickle.dumps(Evil()))
    from pipelines.cli import build_parser, spec_from_args
    from pipelines.presets import COMPRESS

    spec = spec_from_args(build_parser(COMPRESS).parse_args(["--preset", "quick", "--model", "resnet20", "--data",
                                                             str(folder)]), COMPRESS)
    assert spec.dataset == "imagenet" and not marker.exists()


def test_every_torch_load_in_the_code_is_weights_only():
    readers, unsafe = set(), []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for call in _calls(tree, "torch.load"):
                readers.add(str(path.relative_to(ROOT)))
                kw = {k.arg: k.value for k in call.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno}")
            for fn in ("pickle.load", "pickle.loads", "torch.jit.load"):
                unsafe += [f"{path.relative_to(ROOT)}:{c.lineno} {fn}" for c in _calls(tree, fn)
                           if (str(path.relative_to(ROOT)), fn) not in EXPLICIT_UNPICKLERS]
    assert readers >= TENSOR_READERS and not unsafe, (readers, unsafe)  # the scan finds every reader


def test_a_pickled_object_as_weights_is_refused_with_exit_2_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    code = f"import os; open({str(marker)!r}, 'w').write('ran')"
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, (code,))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))  # loading it would call exec(code)
    proc = run_cli([*SMALL, "--store", str(tmp_path / "store"), "--weights", str(tmp_path / "evil.pt")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "tensor-only" in proc.stderr and str(tmp_path / "evil.pt") in proc.stderr
    assert not marker.exists()


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    import pickle

    from haloc import data as hdata

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    from tests.fixtures.fake_data import write_fake_cifar10

    folder = write_fake_cifar10(tmp_path / "cifar", n_train=10, n_test=5)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(BadInputError, match=r"test_batch.*exec is not allowed"):
        hdata.cifar10_datasets(tmp_path / "cifar")
    assert not marker.exists()


# ---- names validated before they become paths --------------------------------------------------------

def _run_search_with_run_id(tmp: Path, run_id: str):
    from orchestrator.run_layout import RunLayout
    from orchestrator.stages.search import SearchSpec, run_search

    return run_search(RunLayout(str(tmp / "store"), run_id), SearchSpec(model="resnet20", hardware=("cpu",)))


def _profile_with_run_id(tmp: Path, run_id: str):
    from orchestrator.run_layout import RunLayout
    from orchestrator.stages.profiling import profile_model

    return profile_model(RunLayout(str(tmp / "store"), run_id), "resnet20", ["asic"], progress=False)


def _manifest_with_run_id(tmp: Path, run_id: str):
    from orchestrator.manifest import RunManifest
    from orchestrator.store import Store

    return RunManifest.load_or_create(Store.open(tmp / "store"), run_id, {})


def _config_id(tmp: Path, cid: str):
    from orchestrator.artifacts import config_id

    return config_id({"config_id": cid, "budget": 0.5, "targets": ["cpu"]})


def _ranks_layer(tmp: Path, layer: str):
    import haloc

    return haloc.decompose(haloc.models.create("resnet20"), {layer: 4})


def _profile_name(tmp: Path, name: str):
    from hw_profiles.profile import get_profile

    return get_profile(name)


NAME_CASES = [
    (_run_search_with_run_id, "../../escape", r"run id '\.\./\.\./escape' is not allowed"),
    (_run_search_with_run_id, "a/b", r"run id 'a/b' is not allowed"),
    (_profile_with_run_id, "../escape", r"run id '\.\./escape' is not allowed"),
    (_manifest_with_run_id, "/abs", r"run id '/abs' is not allowed"),
    (_config_id, "../../models", r"config id '\.\./\.\./models' is not allowed"),
    (_ranks_layer, "../../etc/passwd", r"unknown layer '\.\./\.\./etc/passwd'"),
    (_profile_name, "../profiles/cpu", r"unknown hardware profile '\.\./profiles/cpu'"),
]


@pytest.mark.parametrize("call,name,pattern", NAME_CASES,
                         ids=[f"{c[0].__name__.strip('_')}-{i}" for i, c in enumerate(NAME_CASES)])
def test_names_are_validated_before_they_become_paths(tmp_path, call, name, pattern):
    with pytest.raises(BadInputError, match=pattern):
        call(tmp_path, name)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written, written
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path.parent.parent / "escape").exists()


# ---- an embedded Ray listens on loopback only --------------------------------------------------------

_PROBE = r"""
import json, os, sys
from orchestrator.cluster import connect
connect(None, num_cpus=1, resources={})
import ray

def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out

def socket_inodes(pid):
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except OSError:
        pass
    return found

listening = {}
for table in ("tcp", "tcp6"):
    for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A":  # LISTEN
            listening[f[9]] = f[1]  # inode -> hex local address:port
procs = tree(os.getpid())
mine = sorted({listening[i] for p in procs for i in socket_inodes(p) if i in listening})
from orchestrator.cluster import embedded_dashboard
from orchestrator.run_layout import RunLayout
from orchestrator.run_layout import RunLayout
print(json.dumps({"dashboard": embedded_dashboard(),
                  "gcs": ray.get_runtime_context().gcs_address, "listen": mine, "processes": len(procs)}))
ray.shutdown()
"""

# /proc/net hex addresses of loopback: 127.0.0.1, ::1 and ::ffff:127.0.0.1
_LOOPBACK = ("0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


@pytest.mark.ray  # starts an embedded Ray in a subprocess (about 10 s): not the fast tier
def test_embedded_ray_and_its_dashboard_listen_on_loopback_only(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["dashboard"].startswith("127.0.0.1:")
    assert info["gcs"].startswith("127.0.0.1:")
    assert info["processes"] >= 3 and len(info["listen"]) >= 3  # GCS, raylet, dashboard at least
    exposed = [a for a in info["listen"] if a.split(":")[0] not in _LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"
