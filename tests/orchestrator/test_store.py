"""The artifact store on a local folder and on a real S3 server (moto_server on loopback)."""
from __future__ import annotations

import logging
import os
import socket
import uuid

import pyarrow as pa
import pytest

from haloc.errors import BadInputError
from orchestrator.store import RetryPolicy, Store, StoreUnavailableError, validate_run_id
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY, S3Server

# Patient enough for a moto restart on a loaded 2-core machine; bounded all the same.
PATIENT = RetryPolicy(attempts=12, base_delay_s=0.2, max_delay_s=1.0, max_total_s=45.0)
IMPATIENT = RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.1, max_total_s=2.0)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store.open(tmp_path / "store")
    return Store.open(request.getfixturevalue("s3_store_uri"))


def _fresh_s3_store(server: S3Server, retry: RetryPolicy | None = None) -> Store:
    if not server.is_running():
        server.start()
    bucket = server.make_bucket(f"t-{uuid.uuid4().hex[:12]}")
    return Store.open(server.uri(bucket, "runs"), access_key=ACCESS_KEY, secret_key=SECRET_KEY, retry=retry)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


# ---- round trips ---------------------------------------------------------------------------

def test_bytes_text_json_round_trip(store):
    store.write_bytes("r1/blob.bin", b"\x00\x01binary\xff")
    store.write_text("r1/notes.txt", "héllo\n")
    store.write_json("r1/ranks.json", {"model": "resnet18", "ranks": {"layer1.0.conv1": 32}})
    assert store.read_bytes("r1/blob.bin") == b"\x00\x01binary\xff"
    assert store.read_text("r1/notes.txt") == "héllo\n"
    assert store.read_json("r1/ranks.json") == {"model": "resnet18", "ranks": {"layer1.0.conv1": 32}}
    store.write_json("r1/ranks.json", {"v": 2})  # overwrite
    assert store.read_json("r1/ranks.json") == {"v": 2}


def test_parquet_round_trip(store):
    table = pa.table({"rank": [0, 8, 16], "latency_ms": [1.5, 0.25, 0.5], "hw": ["cpu", "cpu", "cpu"]})
    store.write_parquet("r1/luts/cpu.parquet", table)
    assert store.read_parquet("r1/luts/cpu.parquet").equals(table)


def test_corrupt_parquet_and_json_name_the_path(store):
    store.write_bytes("r1/luts/bad.parquet", b"PAR1 this is not parquet")
    with pytest.raises(BadInputError, match=r"r1/luts/bad\.parquet"):
        store.read_parquet("r1/luts/bad.parquet")
    store.write_bytes("r1/bad.json", b"{not json")
    with pytest.raises(BadInputError, match=r"r1/bad\.json"):
        store.read_json("r1/bad.json")


def test_missing_file_raises_file_not_found(store):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        store.read_json("r1/nope.json")


def test_exists_list_delete(store):
    for path in ["b/2.txt", "a/1.txt", "a/deep/3.txt", "ab.txt"]:
        store.write_text(path, path)
    assert store.list() == ["a/1.txt", "a/deep/3.txt", "ab.txt", "b/2.txt"]
    assert store.list("a") == ["a/1.txt", "a/deep/3.txt"]  # a folder, not a string prefix: no ab.txt
    assert store.list("a/") == ["a/1.txt", "a/deep/3.txt"]
    assert store.list("ab.txt") == ["ab.txt"]
    assert store.list("missing") == []
    assert store.exists("a/1.txt") and store.exists("a") and not store.exists("c")
    store.delete("a/1.txt")
    assert not store.exists("a/1.txt")
    store.delete("a")  # a folder tree
    assert store.list() == ["ab.txt", "b/2.txt"]
    store.delete("never/was")  # missing: fine


def test_sub_store_is_rooted_deeper(store):
    run = store.sub("run1")
    run.write_json("selected.json", {"ok": True})
    assert store.read_json("run1/selected.json") == {"ok": True}
    assert run.list() == ["selected.json"]
    assert run.uri != store.uri and "run1" in run.uri
    assert store.uri_of("run1/selected.json") == run.uri_of("selected.json")
    assert store.uri_of("run1/selected.json").split("?")[0].endswith("/run1/selected.json")
    assert run.root_path == store.root_path + "/run1"
    assert run.is_remote == store.is_remote
    with pytest.raises(BadInputError):
        store.sub("../escape")


def test_upload_and_download_dir(store, tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"weights" * 100)
    (src / "sub" / "meta.json").write_text('{"epoch": 3}')
    written = store.upload_dir(src, "r1/finetune/cfg0")
    assert written == ["r1/finetune/cfg0/model.pt", "r1/finetune/cfg0/sub/meta.json"]
    out = tmp_path / "back"
    store.download_dir("r1/finetune/cfg0", out)
    assert (out / "model.pt").read_bytes() == b"weights" * 100
    assert (out / "sub" / "meta.json").read_text() == '{"epoch": 3}'
    with pytest.raises(FileNotFoundError):
        store.download_dir("r1/none", tmp_path / "none")


def test_filesystem_and_root_path_address_the_same_files(store):
    from pyarrow import fs as pafs

    store.write_text("r1/x.txt", "x")
    info = store.filesystem.get_file_info(store.root_path + "/r1/x.txt")
    assert info.type == pafs.FileType.File
    assert not store.root_path.startswith("s3://")


def test_store_pickles(store):
    import pickle

    store.write_text("p.txt", "p")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_text("p.txt") == "p" and clone.uri == store.uri


# ---- atomicity (local) -----------------------------------------------------------------------

def test_local_writes_leave_no_temp_files(tmp_path):
    store = Store.open(tmp_path)
    for i in range(5):
        store.write_json("r1/m.json", {"i": i})
    store.write_parquet("r1/t.parquet", pa.table({"a": [1]}))
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["m.json", "t.parquet"]


def test_local_failed_write_keeps_old_content(tmp_path, monkeypatch):
    store = Store.open(tmp_path)
    store.write_text("r1/m.json", "old")

    def disk_full(fd):  # the data is in the temp file; the flush to disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.write_text("r1/m.json", "new content that never lands")
    monkeypatch.undo()
    assert store.read_text("r1/m.json") == "old"
    assert [p.name for p in (tmp_path / "r1").iterdir()] == ["m.json"]


def test_list_skips_leftover_temp_files(tmp_path):
    store = Store.open(tmp_path)
    store.write_text("r1/a.txt", "a")
    (tmp_path / "r1" / ".b.txt.tmp-0123abcd").write_text("crashed writer's leftover")
    assert store.list() == ["r1/a.txt"]


# ---- opening: URIs, options, reachability --------------------------------------------------------

def test_local_store_relative_path_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store.open("runs/deep")
    assert (tmp_path / "runs" / "deep").is_dir()
    assert store.root_path == (tmp_path / "runs" / "deep").as_posix() and not store.is_remote
    assert Store.open(f"file://{tmp_path}/runs").root_path == (tmp_path / "runs").as_posix()


@pytest.mark.parametrize("uri, match", [
    ("gs://bucket/x", "scheme 'gs'"),
    ("s3://", "bucket"),
    ("s3://ab/x", "bucket 'ab'"),
    ("s3://Bad_Bucket/x", "bucket"),
    ("s3://bucket/x?endpoint=1.2.3.4:9", "unknown option"),
    ("s3://bucket/a/../b", r"'\.\.'"),
    ("s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=ftp", "scheme 'ftp'"),
    ("", "empty"),
])
def test_bad_uris(uri, match):
    with pytest.raises(BadInputError, match=match):
        Store.open(uri)


def test_bad_option_combinations(tmp_path):
    with pytest.raises(BadInputError, match="local"):
        Store.open(tmp_path, endpoint="127.0.0.1:9000")
    with pytest.raises(BadInputError, match="both"):
        Store.open("s3://bucket/x?endpoint_override=127.0.0.1:1&scheme=http", access_key="AKIAONLYKEYGIVEN")
    with pytest.raises(BadInputError, match="give it once"):
        Store.open("s3://bucket/x?endpoint_override=127.0.0.1:1", endpoint="127.0.0.1:2")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="exists as a file"):
        Store.open(tmp_path / "file")


@pytest.mark.timeout(60)
def test_unreachable_endpoint_fails_fast():
    port = _closed_port()
    with pytest.raises(BadInputError, match=rf"unreachable.*127\.0\.0\.1:{port}"):
        Store.open(f"s3://bucket/runs?endpoint_override=127.0.0.1:{port}&scheme=http",
                   access_key=ACCESS_KEY, secret_key=SECRET_KEY)


@pytest.mark.timeout(60)
def test_https_against_http_server_hints_at_scheme(s3_server):
    with pytest.raises(BadInputError, match="scheme=http"):
        Store.open(f"s3://bucket/runs?endpoint_override={s3_server.endpoint}",
                   access_key=ACCESS_KEY, secret_key=SECRET_KEY)


def test_missing_bucket(s3_server):
    with pytest.raises(BadInputError, match="bucket 'no-such-bucket-here' does not exist"):
        Store.open(s3_server.uri("no-such-bucket-here", "runs"), access_key=ACCESS_KEY, secret_key=SECRET_KEY)


def test_endpoint_as_keyword_arguments(s3_server):
    bucket = s3_server.make_bucket(f"t-{uuid.uuid4().hex[:12]}")
    store = Store.open(f"s3://{bucket}/runs", endpoint=f"http://{s3_server.endpoint}", region="us-east-1",
                       access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    store.write_text("k.txt", "kw")
    # The redacted URI reopens the same store, keys from the environment.
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert Store.open(store.uri).read_text("k.txt") == "kw"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_wrong_credentials(s3_auth_server):
    with pytest.raises(BadInputError, match="refused the credentials") as err:
        Store.open(s3_auth_server.uri("auth-bucket", "runs"), access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert ACCESS_KEY not in str(err.value) and SECRET_KEY not in str(err.value)


# ---- paths and run ids ---------------------------------------------------------------------

BAD_PATHS = ["../x", "a/../../x", "/etc/passwd", "a\\b", "", "a//b", "./a", "a/./b", "~/x", "C:/x"]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_path_traversal_refused(tmp_path, path):
    store = Store.open(tmp_path / "store")
    for call in (lambda: store.write_text(path, "x"), lambda: store.read_text(path),
                 lambda: store.exists(path), lambda: store.delete(path), lambda: store.sub(path)):
        with pytest.raises(BadInputError, match="store path"):
            call()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("run_id", ["r1", "resnet18-demo_2026.11.28", "A" * 64, "0"])
def test_run_id_accepted(run_id):
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", ".hidden", "-x", "a/b", "a b", "..", "A" * 65, "é", 7, None])
def test_run_id_refused(run_id):
    with pytest.raises(BadInputError, match="run id") as err:
        validate_run_id(run_id)
    assert "A-Z a-z 0-9" in str(err.value)


# ---- credentials never leak ----------------------------------------------------------------

def _assert_no_keys(*texts: str) -> None:
    for text in texts:
        assert ACCESS_KEY not in text and SECRET_KEY not in text, text


def test_credentials_redacted(s3_server, caplog):
    caplog.set_level(logging.DEBUG, logger="orchestrator")
    bucket = s3_server.make_bucket(f"t-{uuid.uuid4().hex[:12]}")
    store = Store.open(s3_server.uri(bucket, "runs"), access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    texts = [repr(store), store.uri, str(store), repr(store.sub("r1")), store.sub("r1").uri]
    # Keys inside the URI's user part are used, never shown.
    userinfo_uri = s3_server.uri(bucket, "runs").replace("s3://", f"s3://{ACCESS_KEY}:{SECRET_KEY}@")
    via_uri = Store.open(userinfo_uri)
    via_uri.write_text("u.txt", "u")
    texts += [repr(via_uri), via_uri.uri]
    for call in (
        lambda: store.read_text("missing.txt"),
        lambda: Store.open(s3_server.uri("missing-bucket", "x"), access_key=ACCESS_KEY, secret_key=SECRET_KEY),
        lambda: Store.open(f"s3://{bucket}/x?endpoint_override=127.0.0.1:{_closed_port()}&scheme=http",
                           access_key=ACCESS_KEY, secret_key=SECRET_KEY),
        lambda: Store.open(userinfo_uri.replace(bucket, "missing-bucket")),
        lambda: Store.open(userinfo_uri + "&bogus=1"),
        lambda: Store.open(userinfo_uri.replace(f"{ACCESS_KEY}:", ":")),
    ):
        with pytest.raises(Exception) as err:
            call()
        texts += [str(err.value), repr(err.value)]
    _assert_no_keys(*texts, caplog.text)


# ---- transient failures: retries, then a clear error -----------------------------------------

@pytest.mark.timeout(120)
def test_write_retries_until_server_restarts(s3_server, caplog):
    store = _fresh_s3_store(s3_server, retry=PATIENT)
    store.write_text("r1/before.txt", "up")
    s3_server.stop()
    try:
        restarter = s3_server.restart_later(1.0)
        store.write_json("r1/during.json", {"written": "while the server restarted"})
        restarter.join()
    finally:
        s3_server.start()  # no-op when the restart worked
    assert store.read_json("r1/during.json") == {"written": "while the server restarted"}
    assert "retry" in caplog.text  # it did fail first, and said so
    _assert_no_keys(caplog.text)


@pytest.mark.timeout(120)
def test_restarted_server_without_buckets_yet_is_waited_for(s3_server, caplog):
    store = _fresh_s3_store(s3_server, retry=PATIENT)
    s3_server.stop()
    try:
        # Up without buckets for longer than PATIENT's longest delay: some try must see NoSuchBucket.
        restarter = s3_server.restart_later(0.5, buckets_after_s=1.5)
        store.write_text("r1/x.txt", "x")
        restarter.join()
    finally:
        s3_server.start()
    assert store.read_text("r1/x.txt") == "x"
    assert "NO_SUCH_BUCKET" in caplog.text


@pytest.mark.timeout(120)
def test_server_staying_down_gives_clear_error(s3_server, caplog):
    store = _fresh_s3_store(s3_server, retry=IMPATIENT)
    s3_server.stop()
    try:
        for call in (lambda: store.write_text("r1/x.txt", "x"), lambda: store.read_text("r1/x.txt"),
                     lambda: store.list("r1")):
            with pytest.raises(StoreUnavailableError, match="failed after 3 tries") as err:
                call()
            assert store.uri in str(err.value)
            assert not isinstance(err.value, BadInputError)  # an outage has its own exit code, not "bad input"
            _assert_no_keys(str(err.value))
    finally:
        s3_server.start()
    _assert_no_keys(caplog.text)


def test_local_errors_are_not_retried(tmp_path):
    store = Store.open(tmp_path, retry=IMPATIENT)
    (tmp_path / "r1").write_text("a file where a folder should be")
    with pytest.raises(OSError) as err:
        store.write_text("r1/x.txt", "x")
    assert not isinstance(err.value, StoreUnavailableError)
