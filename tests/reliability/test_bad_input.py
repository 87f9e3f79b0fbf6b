"""Bad input, as users give it, through the entry points they use: each is refused fast, with exit 2 and
one message naming the input and the fix, no traceback, and nothing half-written in the store.

Most cases run `python -m pipelines.<name>` as a subprocess; a few go through the public Python API
where that is the entry point (ranks JSON, LUT files, hardware profiles, haloc.decompose).

What may be left in the store: nothing for a bad input found before a stage starts (flags, run id,
store, hardware, address, weights, data); the run's manifest (which records the failed stage, by
design) for bad input found inside a stage (a LUT in the store, a budget no configuration meets).
"""
from __future__ import annotations

import json
import pickle
import re
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from haloc.errors import BadInputError

from .helpers import SMALL, all_files, run_cli

FIX_WORDS = (r"(use|pass|choose|give|fix|Fix|delete|drop|add|start|Start|create|Create|save|check|rerun|re-extract|"
             r"expected|move|rename|e\.g\.)")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def _state_dict_file(path: Path, model: str) -> Path:
    import torch

    import haloc

    torch.save(haloc.models.create(model).state_dict(), path)
    return path


class _Payload:
    """A pickled object that would run code when unpickled (it must never be)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@dataclass
class Case:
    id: str
    setup: Callable[[Path, object], list[str]]  # (tmp_path, env) -> CLI args (creates files as needed)
    names: Callable[[Path], str] | str  # the input the message must name
    module: str = "pipelines.cifar_resnet20"
    ray: bool = False  # found inside a stage: needs the cluster (--address)
    s3: bool = False  # needs the moto server's keys in the environment
    manifest: bool = False  # the run's manifest may be new (a stage recorded its failure)
    pattern: str = ""  # more the message must say
    extra: dict = field(default_factory=dict)


def _store(tmp: Path) -> str:
    return str(tmp / "store")


def _flags(*extra: str) -> Callable:
    return lambda tmp, env: [*SMALL, "--store", _store(tmp), *extra]


def _paper_data(make: Callable[[Path], Path], module_args=()) -> Callable:
    def setup(tmp, env):
        return ["--preset", "paper", "--data", str(make(tmp)), "--store", _store(tmp), *module_args]
    return setup


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _cifar(tmp: Path) -> Path:
    from tests.fixtures.fake_data import write_fake_cifar10

    write_fake_cifar10(tmp / "cifar", n_train=20, n_test=10)
    return tmp / "cifar"


def _corrupt_cifar(tmp):
    root = _cifar(tmp)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    return root


def _cifar_labels_out_of_range(tmp):
    root = _cifar(tmp)
    path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"] = [12] * len(batch[b"labels"])  # mislabeled: CIFAR-10 has classes 0..9
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return root


def _cifar_with_code(tmp):
    root = _cifar(tmp)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(_Payload(tmp / "pwned"), protocol=2))
    return root


def _imagenet(tmp: Path) -> Path:
    from tests.fixtures.fake_data import write_fake_imagefolder

    write_fake_imagefolder(tmp / "imagenet", classes=2, per_class=2, size=16)
    return tmp / "imagenet"


def _imagenet_mislabeled(tmp):
    root = _imagenet(tmp)
    val = root / "val"
    first = sorted(val.iterdir())[0]
    first.rename(val / "n99999999")  # val/ classes differ from train/
    return root


def _imagenet_corrupt_png(tmp):
    root = _imagenet(tmp)
    image = sorted((root / "train").rglob("*.*"))[0]
    image.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return root


def _weights(make) -> Callable:
    def setup(tmp, env):
        return [*SMALL, "--store", _store(tmp), "--weights", str(make(tmp))]
    return setup


def _not_a_state_dict(tmp):
    import torch

    torch.save([torch.zeros(3)], tmp / "list.pt")
    return tmp / "list.pt"


def _pickled_object(tmp):
    (tmp / "evil.pt").write_bytes(pickle.dumps(_Payload(tmp / "pwned")))
    return tmp / "evil.pt"


# ---- cases found inside a stage: a prepared store --------------------------------------------------

def _prepared_run(tmp: Path, args: list[str], *, done=("weights",)) -> None:
    """Write the original weights (and a manifest marking `done` stages) as an earlier attempt would."""
    from orchestrator.manifest import RunManifest
    from orchestrator.run_spec import RESUME_SAFE
    from orchestrator.store import Store
    from pipelines.cli import build_parser, spec_from_args
    from pipelines.presets import CIFAR_RESNET20

    spec = spec_from_args(build_parser(CIFAR_RESNET20).parse_args(args), CIFAR_RESNET20)
    (tmp / "store" / spec.run_id / "weights").mkdir(parents=True)
    _state_dict_file(tmp / "store" / spec.run_id / "weights" / "original.pt", "resnet20")
    if done != ("weights",):
        manifest = RunManifest.load_or_create(Store.open(spec.store), spec.run_id, spec.to_dict(),
                                              resume_safe=RESUME_SAFE)
        for stage in done:
            manifest.mark(stage, "running")
            manifest.mark(stage, "done")


def _lut_case(write_lut: Callable[[Path], None]) -> Callable:
    def setup(tmp, env):
        args = [*SMALL, "--store", _store(tmp), "--run-id", "lut", "--hardware", "asic",
                "--address", env["_ADDRESS"]]
        _prepared_run(tmp, args)
        luts = _mkdir(tmp / "store" / "lut" / "luts")
        write_lut(luts / "asic.parquet")
        return args
    return setup


def _valid_lut_bytes() -> bytes:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hw_profiles.lut import LutRow, rows_to_table
    from hw_profiles.signature import LayerSignature

    sig = LayerSignature("conv", 16, 16, (3, 3), (1, 1), (1, 1), (1, 1), (32, 32), 1, "int8", False)
    rows = [LutRow("asic", sig, r, 1.0, 1.0, 1.0, 0.0, 1, dt.datetime.now(dt.timezone.utc), "h", "{}")
            for r in (0, 1, 8, 16)]
    buf = pa.BufferOutputStream()
    pq.write_table(rows_to_table(rows), buf)
    return buf.getvalue().to_pybytes()


def _truncated_lut(path: Path) -> None:
    data = _valid_lut_bytes()
    path.write_bytes(data[: len(data) // 2])


def _old_schema_lut(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(_valid_lut_bytes()))
    pq.write_table(table.replace_schema_metadata({b"haloc_lut_schema_version": b"0"}), path)


def _budget_case(tmp, env):
    args = [*SMALL, "--store", _store(tmp), "--run-id", "budget", "--hardware", "asic", "--budget-metric", "flops",
            "--budgets", "0.05", "--address", env["_ADDRESS"]]
    _prepared_run(tmp, args, done=("weights", "profile"))
    return args


def _other_spec_case(tmp, env):
    _prepared_run(tmp, [*SMALL, "--store", _store(tmp), "--run-id", "same"], done=("weights", "profile"))
    return [*SMALL, "--store", _store(tmp), "--run-id", "same", "--demo-size", "96", "32"]  # other data: refused


def _store_is_file(tmp, env):
    (tmp / "store").write_text("not a folder")
    return [*SMALL, "--store", _store(tmp)]


def _s3(uri: Callable[[object], str]) -> Callable:
    return lambda tmp, env: [*SMALL, "--store", uri(env)]


CASES = [
    # flags and values
    Case("budget-above-range", _flags("--budgets", "2"), "--budgets [2.0]", pattern=r"\(0, 1.5\]"),
    Case("budget-zero", _flags("--budgets", "0.5", "0"), "0.0", pattern=r"\(0, 1.5\]"),
    Case("budget-negative", _flags("--budgets", "-0.3"), "-0.3"),
    Case("rank-step-zero", _flags("--rank-step", "0"), "--rank-step 0", pattern=">= 1"),
    Case("demo-size-zero", _flags("--demo-size", "0", "8"), "--demo-size TRAIN 0", pattern=">= 8"),
    Case("unknown-hardware", _flags("--hardware", "cpu", "tpu9"), "'tpu9'", pattern=r"choose one of \["),
    Case("paper-without-data", lambda tmp, env: ["--preset", "paper", "--store", _store(tmp)], "--preset paper",
         pattern="--data"),
    # run ids that would become paths
    Case("run-id-slash", _flags("--run-id", "a/b"), "'a/b'", pattern="A-Z a-z 0-9"),
    Case("run-id-dotdot", _flags("--run-id", ".."), "'..'", pattern="A-Z a-z 0-9"),
    Case("run-id-traversal", _flags("--run-id", "../escape"), "'../escape'"),
    # cluster address
    Case("address-malformed", _flags("--address", "not-an-address"), "'not-an-address'", pattern="host:port"),
    Case("address-no-answer", lambda tmp, env: [*SMALL, "--store", _store(tmp), "--address",
                                                f"127.0.0.1:{env['_CLOSED']}"],
         lambda tmp: "127.0.0.1:", pattern="nothing accepts connections"),
    # stores
    Case("store-is-a-file", _store_is_file, lambda tmp: str((tmp / "store").resolve()), pattern="exists as a file"),
    Case("store-unknown-scheme", _flags(), "", extra={"store": "gs://bucket/runs"}),
    Case("s3-unreachable", _s3(lambda env: f"s3://bucket1/runs?endpoint_override=127.0.0.1:{env['_CLOSED']}&scheme=http"),
         "127.0.0.1:", s3=True, pattern="unreachable"),
    Case("s3-missing-bucket", _s3(lambda env: f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/runs?endpoint_override="
                                              f"{env['_S3']}&scheme=http"),
         "no-such-bucket-", s3=True, pattern="does not exist"),
    Case("s3-wrong-credentials", _s3(lambda env: f"s3://auth-bucket/runs?endpoint_override={env['_S3_AUTH']}&scheme=http"),
         "auth-bucket", s3=True, pattern="refused the credentials"),
    Case("s3-unknown-option", _s3(lambda env: f"s3://bucket1/runs?endpoint_override={env['_S3']}&bogus=1"),
         "bogus", s3=True),
    # weights
    Case("weights-missing", _weights(lambda tmp: tmp / "nope.pt"), lambda tmp: str(tmp / "nope.pt"),
         pattern="cannot be read"),
    Case("weights-not-a-state-dict", _weights(_not_a_state_dict), lambda tmp: str(tmp / "list.pt"),
         pattern="not a state dict"),
    Case("weights-pickled-object", _weights(_pickled_object), lambda tmp: str(tmp / "evil.pt"),
         pattern="tensor-only"),
    Case("weights-other-model", lambda tmp, env: [*SMALL, "--store", _store(tmp), "--weights",
                                                  str(_state_dict_file(tmp / "r20.pt", "resnet20"))],
         lambda tmp: str(tmp / "r20.pt"), module="pipelines.cifar_vgg16", pattern="do not fit model 'vgg16'"),
    # data
    Case("data-missing", _paper_data(lambda tmp: tmp / "missing"), lambda tmp: str(tmp / "missing")),
    Case("data-empty", _paper_data(lambda tmp: _mkdir(tmp / "empty")), lambda tmp: str(tmp / "empty"),
         pattern="empty"),
    Case("cifar-corrupt-batch", _paper_data(_corrupt_cifar), "data_batch_3", pattern="corrupt"),
    Case("cifar-labels-out-of-range", _paper_data(_cifar_labels_out_of_range), "test_batch", pattern="0..9"),
    Case("cifar-batch-runs-code", _paper_data(_cifar_with_code), "data_batch_1", pattern="not allowed"),
    Case("imagenet-mislabeled", _paper_data(_imagenet_mislabeled), lambda tmp: str(tmp / "imagenet"),
         module="pipelines.imagenet_resnet18", pattern="different class folders"),
    Case("imagenet-corrupt-png", _paper_data(_imagenet_corrupt_png), ".png", module="pipelines.imagenet_resnet18",
         pattern="cannot be decoded"),
    Case("data-s3-unreachable", lambda tmp, env: ["--preset", "paper", "--store", _store(tmp), "--data",
                                                  f"s3://bucket1/cifar?endpoint_override=127.0.0.1:{env['_CLOSED']}"
                                                  "&scheme=http"],
         "s3://bucket1/cifar", s3=True, pattern="cannot be read"),
    # found inside a stage (the cluster runs; the manifest records the failure)
    Case("lut-truncated", _lut_case(_truncated_lut), "lut/luts/asic.parquet", ray=True, manifest=True,
         pattern="corrupt or truncated"),
    Case("lut-not-parquet", _lut_case(lambda p: p.write_bytes(b"PAR1 this is no parquet PAR1")),
         "lut/luts/asic.parquet", ray=True, manifest=True),
    Case("lut-other-schema-version", _lut_case(_old_schema_lut), "lut/luts/asic.parquet", ray=True, manifest=True,
         pattern="schema version 0"),
    Case("budget-cannot-be-met", _budget_case, "budget 0.05", ray=True, manifest=True,
         pattern=r"smallest reachable cost .*fraction 0\.\d+"),
    Case("rerun-other-spec", _other_spec_case, "'same'", manifest=True,
         pattern=r'other demo_train: .*"stored": 64, "given": 96.*new --run-id'),
]


def _env_for(case: Case, request) -> dict:
    import os

    env = dict(os.environ)
    env["_CLOSED"] = str(_closed_port())
    env["HALOC_DATA_CACHE"] = str(request.getfixturevalue("tmp_path") / "data-cache")  # never ~/.cache
    if case.ray:
        cluster = request.getfixturevalue("ray_cluster")
        env.update(cluster.env, _ADDRESS=cluster.address)
    if case.s3:
        server = request.getfixturevalue("s3_server")
        server.make_bucket("bucket1")
        env.update(server.env(), _S3=server.endpoint)
        if case.id == "s3-wrong-credentials":
            env["_S3_AUTH"] = request.getfixturevalue("s3_auth_server").endpoint
    return env


def _marks(case: Case) -> list:
    """The tier markers of a case (tests/conftest.py cannot see fixtures asked for at run time). Every
    case runs the CLI in a subprocess as a user does (`pipeline`); one found inside a stage runs the
    stages before it on the session's Ray (`ray`); an S3 case needs the moto server (`s3`)."""
    return [pytest.mark.pipeline] + ([pytest.mark.ray] if case.ray else []) + ([pytest.mark.s3] if case.s3 else [])


def _check_refusal(case: Case, tmp_path: Path, args: list[str], rc: int, err: str, before: set[str]) -> None:
    """Exit 2, one `error:` line printed last that names the input and the fix, no traceback, and
    nothing half-written in the store."""
    assert rc == 2, f"rc {rc}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    message = errors[0]
    assert message == err.rstrip("\n").splitlines()[-1], "the message is the last thing printed"
    names = case.names(tmp_path) if callable(case.names) else case.names
    named = names or case.extra.get("store", "")
    assert named in message, f"{named!r} not in {message!r}"
    assert re.search(case.pattern, message), message
    assert re.search(FIX_WORDS, message), f"no fix in {message!r}"
    # nothing half-written: no new file at all, or only what a run that started its stages keeps of the
    # attempt (the manifest with the failed stage, its config.yaml, the driver's log)
    new = (all_files(tmp_path / "store") if (tmp_path / "store").is_dir() else set()) - before
    run = args[args.index("--run-id") + 1] if "--run-id" in args else None
    allowed = {f"{run}/{f}" for f in ("manifest.json", "config.yaml", "logs/driver.log")} if case.manifest and run \
        else set()
    assert new <= allowed, new
    assert not (tmp_path / "pwned").exists(), "a pickled payload ran"


def _prepare(case: Case, tmp_path: Path, env: dict) -> tuple[list[str], set[str]]:
    args = case.setup(tmp_path, env)
    if "store" in case.extra:
        args[args.index("--store") + 1] = case.extra["store"]
    return args, (all_files(tmp_path / "store") if (tmp_path / "store").is_dir() else set())


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_bad_input_exits_2_with_one_message_and_writes_nothing(case, tmp_path, request):
    env = _env_for(case, request)
    args, before = _prepare(case, tmp_path, env)
    clean_env = {k: v for k, v in env.items() if not k.startswith("_")}
    # Fail fast: a bad input found before Ray starts within a minute; one found inside a stage after
    # the stages before it ran (training the original, profiling), within five.
    proc = run_cli(args, module=case.module, env=clean_env, timeout=300 if case.manifest else 60)
    _check_refusal(case, tmp_path, args, proc.returncode, proc.stderr, before)


BEFORE_RAY = [c for c in CASES if not (c.ray or c.s3 or c.manifest)]


@pytest.mark.parametrize("case", BEFORE_RAY, ids=[c.id for c in BEFORE_RAY])
def test_bad_input_is_refused_before_any_stage_in_process(case, tmp_path, request, capfd, monkeypatch):
    """The fast tier's view of the cases found before Ray starts: the same CLI entry (`main`) in this
    process, so that no interpreter starts per case; the subprocess test above proves the same of
    `python -m` itself. That no case gets as far as Ray is part of what it checks."""
    import importlib
    import signal

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the run installs its own
    env = _env_for(case, request)
    args, before = _prepare(case, tmp_path, env)
    monkeypatch.setenv("HALOC_DATA_CACHE", env["HALOC_DATA_CACHE"])
    from orchestrator import cluster
    from pipelines.cli import main

    # the one door to Ray is orchestrator.cluster.connect: record any call (the session's Ray may be up
    # already, started by an earlier test in this process, so is_initialized() alone proves nothing)
    connects = []

    def refuse(*a, **k):
        connects.append((a, k))
        raise AssertionError("a bad input found before any stage must not start or join Ray")

    for name, module in list(sys.modules.items()):  # also where a stage module bound it at import
        if name.startswith("orchestrator") and getattr(module, "connect", None) is cluster.connect:
            monkeypatch.setattr(module, "connect", refuse)
    ray = sys.modules.get("ray")
    ray_was_up = ray is not None and ray.is_initialized()
    defaults = next(v for v in vars(importlib.import_module("pipelines.presets")).values()
                    if getattr(v, "pipeline", None) == case.module.rsplit(".", 1)[1])
    try:
        rc = main(defaults, args)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capfd.readouterr().err
    _check_refusal(case, tmp_path, args, rc, err, before)
    ray = sys.modules.get("ray")
    assert connects == [], "a bad input found before any stage must not start or join Ray"
    assert ray_was_up or ray is None or not ray.is_initialized(), "a bad input found before any stage started Ray"


# ---- the public Python API, where it is the entry point ----------------------------------------------

def _ranks_file(tmp: Path, obj) -> Path:
    path = tmp / "ranks.json"
    path.write_text(json.dumps(obj))
    return path


API_CASES = [
    ("ranks-other-model", lambda tmp: _read_ranks(_ranks_file(tmp, {"model": "vgg16", "ranks": {}}), "resnet20"),
     r"ranks\.json.*is for model 'vgg16', not 'resnet20'"),
    ("ranks-out-of-range", lambda tmp: _read_ranks(_ranks_file(tmp, {"model": "resnet20",
                                                                     "ranks": {"layer1.0.conv1": 999}}), "resnet20"),
     r"ranks\.json.*layer1\.0\.conv1.*999"),
    ("ranks-zero", lambda tmp: _read_ranks(_ranks_file(tmp, {"model": "resnet20", "ranks": {"layer1.0.conv1": 0}})),
     r"ranks\.json.*layer1\.0\.conv1"),
    ("ranks-unknown-layer", lambda tmp: _read_ranks(_ranks_file(tmp, {"model": "resnet20",
                                                                      "ranks": {"layer9.conv": 4}})),
     r"ranks\.json.*unknown layer 'layer9\.conv'"),
    ("ranks-unknown-model", lambda tmp: _read_ranks(_ranks_file(tmp, {"model": "resnet99", "ranks": {}})),
     r"ranks\.json.*resnet99.*choose one of"),
    ("lut-file-corrupt", lambda tmp: _lut_api(tmp, b"PAR1\x00\x00garbage"), r"cpu\.parquet.*corrupt or truncated"),
    ("lut-file-old-version", lambda tmp: _lut_api(tmp, None), r"cpu\.parquet: schema version 0.*profile again"),
    ("profile-wrong-type", lambda tmp: _profile_api(tmp, "batch_size: one\n"),
     r"mycpu\.yaml: key 'batch_size' has value 'one'; allowed: an integer >= 1"),
    ("profile-unknown-key", lambda tmp: _profile_api(tmp, "batchsize: 1\n"), r"mycpu\.yaml: key 'batchsize'"),
    ("profile-unknown-name", lambda tmp: _get_profile("tpu9", ()), r"unknown hardware profile 'tpu9'"),
    ("decompose-rank-too-large", lambda tmp: _decompose({"layer1.0.conv1": 17}), r"layer1\.0\.conv1.*17"),
    ("model-unknown", lambda tmp: _create("resnet99"), r"unknown model 'resnet99'; choose one of"),
]


def _read_ranks(path, expected=None):
    from haloc.export import read_ranks_json

    return read_ranks_json(path, expected_model=expected)


def _lut_api(tmp: Path, data: bytes | None):
    from hw_profiles.lut import LatencyTable

    path = tmp / "cpu.parquet"
    if data is None:
        _old_schema_lut(path)
    else:
        path.write_bytes(data)
    return LatencyTable.from_file(path)


def _get_profile(name, dirs):
    from hw_profiles.profile import get_profile

    return get_profile(name, dirs)


def _profile_api(tmp: Path, extra: str):
    folder = _mkdir(tmp / "profiles")
    (folder / "mycpu.yaml").write_text("name: mycpu\nbackend: torch\nray_resource: hw_cpu\n" + extra)
    return _get_profile("mycpu", [folder])


def _decompose(ranks):
    import haloc

    return haloc.decompose(haloc.models.create("resnet20"), ranks)


def _create(name):
    import haloc

    return haloc.models.create(name)


@pytest.mark.parametrize("call,pattern", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_bad_input_error_naming_it(tmp_path, call, pattern):
    with pytest.raises(BadInputError) as err:
        call(tmp_path)
    assert re.search(pattern, str(err.value)), str(err.value)


def test_the_table_is_as_large_as_docs_reliability_md_says():
    assert len({c.id for c in CASES}) == len(CASES) == 35 and len({c[0] for c in API_CASES}) == len(API_CASES) == 12
