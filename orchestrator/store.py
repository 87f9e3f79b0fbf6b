"""The artifact store: a local folder or an `s3://bucket/prefix`, through `pyarrow.fs`.

Every stage writes its artifacts here, on paths relative to the store's root (`run1/luts/cpu.parquet`).
Writes are atomic: a local write goes to a hidden temp file beside the target and is renamed over
it; an S3 write is one PutObject (or a multipart upload, which S3 only shows once completed), so a
reader never takes a half-written object as whole. Transient S3 errors (connection refused or reset,
5xx, throttling) are retried with exponential backoff, then raise `StoreUnavailableError`.

    store = Store.open("s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http")
    store.write_json("run1/selected.json", {...})
    tuner_kwargs = dict(storage_filesystem=store.filesystem, storage_path=store.sub("run1").root_path)

Credentials come from the arguments, the URI's user part, or pyarrow's standard AWS chain
(environment, profile); they never appear in `repr`, `uri`, logs or error messages.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from haloc.errors import BadInputError
from haloc.files import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_ID_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_QUERY_KEYS = ("endpoint_override", "scheme", "region")
# scheme://KEY:SECRET@rest: the key has no '/', ':' or '@'; the secret no '@' (AWS secrets may hold '/').
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/:@?#]*):([^@?#]*)@(.*)$", re.DOTALL)
# Hidden temp files of local atomic writes: `.name.tmp-<8 hex>`; list() never shows them.
_TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")
# pyarrow/AWS SDK error texts of errors worth retrying: network failures, 5xx, throttling.
_TRANSIENT_RE = re.compile(
    r"NETWORK_CONNECTION|curlCode|Could not connect|Connection refused|Connection reset|Broken pipe"
    r"|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|SLOW_DOWN|THROTTLING|REQUEST_TIMEOUT"
    r"|HTTP status 5\d\d|response code:? 5\d\d",
    re.IGNORECASE,
)
_DENIED_RE = re.compile(
    r"ACCESS_DENIED|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|InvalidAccessKeyId|SignatureDoesNotMatch"
    r"|HTTP status 403|MISSING_AUTHENTICATION_TOKEN|UNRECOGNIZED_CLIENT|EXPIRED_TOKEN"
)
_NO_BUCKET_RE = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket")


class StoreUnavailableError(RuntimeError):
    """The store's endpoint kept failing (down, unreachable, 5xx) through every retry: an outage, not
    bad input (the CLIs exit with their own code for it). At `Store.open` an unreachable endpoint is
    reported as bad input instead: a store that cannot be reached at all is most likely mistyped."""

    def __init__(self, message: str, *, reason: str = ""):
        super().__init__(message)
        self.reason = reason  # the last error, short and scrubbed of credentials


class StoreWriteError(OSError):
    """A local store could not be written (a full disk, a read-only filesystem, no permission): the
    message names the path and the fix; nothing half-written is left (writes are atomic)."""


class StoreAccessDeniedError(BadInputError):
    """The endpoint refused the credentials or the bucket's permissions refused the operation."""

    def __init__(self, message: str, *, reason: str = ""):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient store errors: delays base, 2*base, ... capped at max_delay_s."""

    attempts: int = 6  # tries in all, the first included
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    max_total_s: float = 20.0  # no new try starts after this much time since the first

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_total_s < 0:
            raise BadInputError(f"RetryPolicy: attempts must be >= 1 and delays >= 0, got {self}")

    def delay(self, failed_tries: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failed_tries - 1))


# Opening checks reachability quickly: a store that is down at open is a setup error, not a blip.
_OPEN_RETRY = RetryPolicy(attempts=2, base_delay_s=0.2, max_delay_s=0.2, max_total_s=3.0)


def validate_run_id(run_id: str) -> str:
    """Return `run_id` if it is a safe single path segment, else raise BadInputError."""
    return validate_name(run_id, "run id", example="resnet18-2026-11-28")


def validate_name(name: str, what: str, example: str = "profile") -> str:
    """Return `name` if it matches the run-id rule (a safe single path segment), else BadInputError."""
    if not isinstance(name, str) or not _RUN_ID_RE.fullmatch(name):
        raise BadInputError(f"{what} {name!r} is not allowed: use {RUN_ID_RULE} (e.g. {example!r}).")
    return name


def validate_path(path: str, *, allow_root: bool = False) -> str:
    """Return a relative POSIX path inside the store (no '..', '.', '//', leading '/', backslash)."""
    if not isinstance(path, str):
        raise BadInputError(f"store path must be a str, got {type(path).__name__} {path!r}")
    if path == "" and allow_root:
        return ""
    fix = "use a relative path with '/' separators that stays inside the store, like 'run1/luts/cpu.parquet'"
    if "\\" in path or "\x00" in path:
        raise BadInputError(f"store path {path!r} contains a backslash or NUL; {fix}")
    if path.startswith("/") or path.startswith("~") or re.match(r"^[A-Za-z]:", path):
        raise BadInputError(f"store path {path!r} is absolute; {fix}")
    parts = path.rstrip("/").split("/") if allow_root else path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadInputError(f"store path {path!r} has an empty, '.' or '..' segment; {fix}")
    return "/".join(parts)


@dataclass(frozen=True)
class _S3Options:
    bucket: str
    prefix: str
    endpoint: str | None
    scheme: str
    region: str
    access_key: str | None = None
    secret_key: str | None = None

    def __repr__(self) -> str:  # never show keys, even in a debugger
        return f"_S3Options(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"


class Store:
    """Artifacts under one root (local folder or S3 prefix); all paths are relative to it."""

    def __init__(self, fs, root: str, *, display: str, retry: RetryPolicy,
                 s3: tuple[_S3Options, float] | None = None, secrets: tuple[str, ...] = ()):
        # Use Store.open(); this constructor trusts its arguments.
        self._fs = fs
        self._root = root.rstrip("/") if root != "/" else root
        self._display = display
        self._s3 = s3  # (options, connect timeout) of a remote store, to build Ray Tune's filesystem
        self._retry = retry
        self._secrets = tuple(s for s in secrets if s and len(s) >= 6)  # shorter ones are no real keys
        self._tune_fs = None if s3 else fs

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: str | os.PathLike, *, endpoint: str | None = None, region: str | None = None,
             access_key: str | None = None, secret_key: str | None = None, scheme: str | None = None,
             retry: RetryPolicy | None = None, connect_timeout_s: float = 2.0) -> Store:
        """Open (and check) a store: a local path, `file://...`, or `s3://bucket/prefix[?query]`.

        S3 options come from the URI query (`endpoint_override`, `scheme`, `region`) or the keyword
        arguments (`endpoint` may carry its scheme: `http://127.0.0.1:9000`). Raises BadInputError
        within seconds if the endpoint is unreachable, the bucket is missing or the keys are refused.
        """
        retry = retry or RetryPolicy()
        text = os.fspath(uri)
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(f"store URI {text!r} is empty; give a local folder or s3://bucket/prefix")
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme == "s3":
            opts = _parse_s3(text, endpoint=endpoint, region=region, scheme=scheme,
                             access_key=access_key, secret_key=secret_key)
            return cls._open_s3(opts, retry, connect_timeout_s)
        if any(v is not None for v in (endpoint, region, access_key, secret_key, scheme)):
            raise BadInputError(
                f"store {_without_userinfo(text)!r} is local, but S3 options (endpoint/region/keys/scheme) "
                "were given; drop them or use an s3://bucket/prefix URI"
            )
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise BadInputError(f"store URI {_without_userinfo(text)!r}: file:// URIs must be local "
                                    "(file:///abs/path)")
            return cls._open_local(urllib.parse.unquote(parsed.path), retry)
        if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
            raise BadInputError(
                f"store URI {_without_userinfo(text)!r} has scheme {parsed.scheme!r}; allowed: a local path, "
                "file:///path, or s3://bucket/prefix (S3-compatible servers via "
                "?endpoint_override=HOST:PORT&scheme=http)"
            )
        return cls._open_local(text, retry)

    @classmethod
    def _open_local(cls, path: str, retry: RetryPolicy) -> Store:
        from pyarrow import fs as pafs

        root = Path(path).expanduser().resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise BadInputError(f"store folder {str(root)!r} exists as a file; give a folder path") from None
        except OSError as err:
            raise BadInputError(f"store folder {str(root)!r} cannot be created ({err.strerror}); "
                                "choose a writable folder") from None
        if not os.access(root, os.W_OK | os.X_OK) or _read_only(root):
            raise StoreWriteError(30, f"store folder {str(root)!r} is not writable (a read-only filesystem or no "
                                      "permission); make it writable or choose another --store")
        return cls(pafs.LocalFileSystem(), root.as_posix(), display=root.as_posix(), retry=retry)

    @classmethod
    def _open_s3(cls, opts: _S3Options, retry: RetryPolicy, connect_timeout_s: float) -> Store:
        secrets = (opts.access_key, opts.secret_key, os.environ.get("AWS_SECRET_ACCESS_KEY"),
                   os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SESSION_TOKEN"))
        root = f"{opts.bucket}/{opts.prefix}" if opts.prefix else opts.bucket
        # Our own loop retries store calls (bounded, logged): pyarrow tries once. Delayed open lets
        # a small write be a single PutObject instead of a multipart upload.
        fs = _s3_filesystem(opts, connect_timeout_s, attempts=1, delayed_open=True)
        store = cls(fs, root, display=_s3_display(opts), retry=retry, s3=(opts, connect_timeout_s),
                    secrets=secrets)
        store._check_bucket(opts)
        return store

    def _check_bucket(self, opts: _S3Options) -> None:
        from pyarrow import fs as pafs

        endpoint = opts.endpoint or "AWS S3"
        try:
            info = self._call("open", "", lambda: self._fs.get_file_info(opts.bucket),
                              policy=_OPEN_RETRY, quiet=True)
        except StoreUnavailableError as err:
            plain_http_hint = opts.scheme == "https" and opts.endpoint
            hint = " If the server speaks plain HTTP, add scheme=http." if plain_http_hint else ""
            raise BadInputError(
                f"store {self._display}: the S3 endpoint {endpoint} is unreachable ({err.reason}). "
                f"Start the server or fix endpoint_override/scheme in the store URI.{hint}"
            ) from None
        except StoreAccessDeniedError as err:
            raise BadInputError(
                f"store {self._display}: the S3 endpoint {endpoint} refused the credentials ({err.reason}). "
                "Fix the access key/secret (arguments, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the "
                "AWS profile) or the bucket's permissions."
            ) from None
        except OSError as err:
            raise BadInputError(f"store {self._display}: checking bucket {opts.bucket!r} failed: "
                                f"{self._scrub(str(err))}") from None
        if info.type == pafs.FileType.NotFound:
            raise BadInputError(
                f"store {self._display}: bucket {opts.bucket!r} does not exist at {endpoint}. Create it "
                f"(aws s3 mb s3://{opts.bucket}) or fix the bucket name in the store URI."
            )

    # ---- identity --------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The store's URI without credentials (reopen it with keys from the environment)."""
        return self._display

    def uri_of(self, path: str) -> str:
        """The redacted URI of one file in the store, for messages (`s3://b/p/x.json?endpoint...`)."""
        return _join_display(self._display, validate_path(path))

    @property
    def is_remote(self) -> bool:
        return self._s3 is not None

    @property
    def filesystem(self):
        """A pyarrow FileSystem for Ray Tune's `storage_filesystem` (with pyarrow's own retries)."""
        if self._tune_fs is None:  # Tune syncs on its own, so it gets pyarrow's retries
            self._tune_fs = _s3_filesystem(*self._s3, attempts=5, delayed_open=False)
        return self._tune_fs

    @property
    def root_path(self) -> str:
        """The root inside `filesystem`: `bucket/prefix` for S3 (no s3://), an absolute path locally."""
        return self._root

    def __repr__(self) -> str:
        return f"Store({self._display!r})"

    def sub(self, path: str) -> Store:
        """A store rooted at `path` below this one, sharing its connection."""
        rel = validate_path(path)
        child = Store(self._fs, self._join(rel), display=_join_display(self._display, rel),
                      retry=self._retry, s3=self._s3, secrets=self._secrets)
        child._tune_fs = self._tune_fs
        return child

    # ---- bytes, text, JSON, Parquet -----------------------------------------------------------

    def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> None:
        """Write atomically: readers see the old content or the new, never a part."""
        key = self._join(validate_path(path))
        if self._s3:
            self._call("write", path, lambda: self._put(key, data))
        else:
            self._write_local(path, key, data)

    def _write_local(self, path: str, key: str, data) -> None:
        try:
            atomic_write(key, data)
        except OSError as err:
            raise StoreWriteError(err.errno, f"store {self._display}: cannot write {path!r} ({err.strerror or err}); "
                                  "free space on that disk, make it writable, or choose another --store") from None

    def read_bytes(self, path: str) -> bytes:
        key = self._join(validate_path(path))

        def get() -> bytes:
            with self._fs.open_input_stream(key) as f:
                return f.read()

        try:
            return self._call("read", path, get)
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"store {self._display}: no file at {path!r}") from None

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def write_json(self, path: str, obj: Any) -> None:
        """Write `obj` as indented JSON (sorted keys, so reruns give identical bytes)."""
        self.write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: str) -> Any:
        data = self.read_bytes(path)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadInputError(f"store {self._display}: {path!r} is not valid JSON ({err}); "
                                "delete it (the stage rebuilds it) or restore it") from None

    def write_parquet(self, path: str, table) -> None:
        """Write a pyarrow Table as one Parquet file (serialised in memory, then one atomic write)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        self.write_bytes(path, memoryview(buf.getvalue()))

    def read_parquet(self, path: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self.read_bytes(path)
        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as err:
            raise BadInputError(f"store {self._display}: {path!r} is not a readable Parquet file ({err}); "
                                "delete it (the stage rebuilds it) or restore it") from None

    # ---- listing and tree operations ----------------------------------------------------------

    def exists(self, path: str) -> bool:
        from pyarrow import fs as pafs

        key = self._join(validate_path(path))
        return self._call("stat", path, lambda: self._fs.get_file_info(key)).type != pafs.FileType.NotFound

    def list(self, prefix: str = "") -> list[str]:
        """Files under the folder `prefix` (recursive), as sorted paths relative to the store root."""
        from pyarrow import fs as pafs

        rel = validate_path(prefix, allow_root=True)
        base = self._join(rel)

        def ls():
            try:
                infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            except NotADirectoryError:  # local: prefix names a file
                infos = []
            # `prefix` may name a file: list just that file (S3 returns no entries for it).
            return infos or ([self._fs.get_file_info(base)] if rel else [])

        start = len(self._root) + 1
        found = []
        for info in self._call("list", prefix, ls):
            if info.type == pafs.FileType.File and not _TMP_RE.match(info.base_name):
                found.append(info.path[start:])
        return sorted(found)

    def delete(self, path: str) -> None:
        """Delete a file or a folder tree; a missing path is not an error."""
        from pyarrow import fs as pafs

        key = self._join(validate_path(path))

        def rm() -> None:
            kind = self._fs.get_file_info(key).type
            if kind == pafs.FileType.Directory:
                self._fs.delete_dir(key)
            elif kind == pafs.FileType.File:
                self._fs.delete_file(key)

        self._call("delete", path, rm)

    def upload_dir(self, local_dir: str | os.PathLike, path: str) -> list[str]:
        """Copy a local folder tree to `path` (file by file, each write atomic); returns store paths."""
        src = Path(local_dir)
        if not src.is_dir():
            raise BadInputError(f"upload_dir: {str(src)!r} is not a folder; give an existing local folder")
        rel = validate_path(path, allow_root=True)
        written = []
        for file in sorted(p for p in src.rglob("*") if p.is_file()):
            dest = "/".join(filter(None, (rel, file.relative_to(src).as_posix())))
            self.write_bytes(dest, file.read_bytes())
            written.append(dest)
        return written

    def download_dir(self, path: str, local_dir: str | os.PathLike) -> list[Path]:
        """Copy every file under `path` into `local_dir` (each file written atomically)."""
        rel = validate_path(path, allow_root=True)
        files = self.list(rel)
        if not files:
            raise FileNotFoundError(f"store {self._display}: nothing under {path!r} to download")
        dest_root = Path(local_dir)
        out = []
        for name in files:
            inner = name[len(rel) + 1:] if rel else name
            if inner == "":  # `path` was a single file
                inner = name.rsplit("/", 1)[-1]
            dest = dest_root / inner
            atomic_write(dest, self.read_bytes(name))
            out.append(dest)
        return out

    # ---- internals -------------------------------------------------------------------------

    def _join(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def _put(self, key: str, data) -> None:
        # One stream per try: S3 shows the object only when close() completes the upload; a
        # failure before that leaves no object (or the previous one) in place.
        with self._fs.open_output_stream(key) as f:
            f.write(data)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, what: str, path: str, fn: Callable[[], T], policy: RetryPolicy | None = None,
              quiet: bool = False) -> T:
        """Run `fn`, retrying transient errors with backoff; then StoreUnavailableError."""
        policy = policy or self._retry
        start = time.monotonic()
        tries = 0
        seen_transient = False
        while True:
            tries += 1
            try:
                return fn()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                raise  # answers, not failures (local permission problems are not transient either)
            except OSError as err:
                reason = self._scrub(_first_line(err))
                text = str(err)
                if _DENIED_RE.search(text):
                    raise StoreAccessDeniedError(
                        f"store {self._display}: {what} {path!r} was refused: {reason}. Fix the access key/secret "
                        "(arguments, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile) or the bucket's "
                        "permissions.", reason=reason) from None
                transient = bool(_TRANSIENT_RE.search(text)) or isinstance(err, ConnectionError)
                # A restarted endpoint can answer before its buckets are visible again.
                transient |= seen_transient and bool(_NO_BUCKET_RE.search(text))
                if not (self._s3 and transient):
                    raise OSError(f"store {self._display}: {what} {path!r} failed: {reason}") from None
                seen_transient = True
                elapsed = time.monotonic() - start
                delay = policy.delay(tries)
                if tries >= policy.attempts or elapsed + delay > policy.max_total_s:
                    raise StoreUnavailableError(
                        f"store {self._display}: {what} {path!r} failed after {tries} tries over {elapsed:.1f}s: "
                        f"{reason}. The S3 endpoint is down or failing; check it, then rerun (the run resumes).",
                        reason=reason,
                    ) from None
                if not quiet:
                    log.warning("store %s: %s %r failed (%s); retry %d/%d in %.2fs",
                                self._display, what, path, reason, tries, policy.attempts - 1, delay)
                time.sleep(delay)


def _s3_filesystem(opts: _S3Options, connect_timeout_s: float, *, attempts: int, delayed_open: bool):
    from pyarrow import fs as pafs

    return pafs.S3FileSystem(
        access_key=opts.access_key, secret_key=opts.secret_key, region=opts.region, scheme=opts.scheme,
        endpoint_override=opts.endpoint, connect_timeout=connect_timeout_s,
        request_timeout=max(connect_timeout_s, 10.0),
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), allow_delayed_open=delayed_open,
    )


def _read_only(folder: Path) -> bool:
    """A read-only mount (os.access says yes to root even there)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def _parse_s3(text: str, *, endpoint, region, scheme, access_key, secret_key) -> _S3Options:
    fix = "use s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http&region=REGION"
    user_key, user_secret = None, None
    m = _USERINFO_RE.match(text)
    if m:  # s3://KEY:SECRET@bucket/prefix, as pyarrow accepts it (the secret may hold a raw '/')
        user_key, user_secret = urllib.parse.unquote(m.group(2)), urllib.parse.unquote(m.group(3))
        text = m.group(1) + m.group(4)
    safe_text = text
    parsed = urllib.parse.urlsplit(text)
    bucket = parsed.netloc
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise BadInputError(f"store URI {safe_text!r}: bucket {bucket!r} is not a valid S3 bucket name "
                            f"(3-63 characters: a-z 0-9 . -); {fix}")
    prefix = parsed.path.strip("/")
    if prefix:
        try:
            prefix = validate_path(prefix)
        except BadInputError as err:
            raise BadInputError(f"store URI {safe_text!r}: bad prefix: {err}") from None
    try:
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True, strict_parsing=bool(parsed.query))
    except ValueError:
        raise BadInputError(f"store URI {safe_text!r}: the query is malformed; {fix}") from None
    unknown = sorted(set(query) - set(_S3_QUERY_KEYS))
    if unknown:
        raise BadInputError(f"store URI {safe_text!r}: unknown option(s) {unknown}; allowed: "
                            f"{list(_S3_QUERY_KEYS)} (pass keys as arguments or AWS_* environment variables)")
    q = {k: v[-1] for k, v in query.items()}

    def pick(name: str, from_uri: str | None, from_arg: str | None) -> str | None:
        if from_uri and from_arg and from_uri != from_arg:
            raise BadInputError(f"store URI {safe_text!r}: {name} is {from_uri!r} in the URI but {from_arg!r} "
                                "as an argument; give it once")
        return from_arg or from_uri or None

    arg_scheme, arg_ep = _strip_scheme(endpoint) if endpoint else (None, None)
    uri_scheme, uri_ep = _strip_scheme(q["endpoint_override"]) if q.get("endpoint_override") else (None, None)
    ep = pick("endpoint", uri_ep, arg_ep)
    ep_scheme = arg_scheme or uri_scheme
    sch = pick("scheme", q.get("scheme"), scheme) or ep_scheme or "https"
    if ep_scheme and sch != ep_scheme:
        raise BadInputError(f"store URI {safe_text!r}: the endpoint says {ep_scheme}:// but scheme is {sch!r}")
    if sch not in ("http", "https"):
        raise BadInputError(f"store URI {safe_text!r}: scheme {sch!r} is not 'http' or 'https'")
    env_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    reg = pick("region", q.get("region"), region) or env_region
    if not reg:  # AWS proper: ask where the bucket lives; a custom endpoint: the SDK's default
        reg = _resolve_region(bucket) if ep is None else "us-east-1"
    key = access_key if access_key is not None else user_key
    secret = secret_key if secret_key is not None else user_secret
    if bool(key) != bool(secret):
        raise BadInputError(f"store {safe_text!r}: give both the access key and the secret key, or neither "
                            "(then the AWS environment/profile is used)")
    return _S3Options(bucket, prefix, ep, sch, reg, key or None, secret or None)


def _strip_scheme(endpoint: str) -> tuple[str | None, str]:
    """'http://h:p/' -> ('http', 'h:p'); 'h:p' -> (None, 'h:p')."""
    m = re.match(r"^(https?)://(.*)$", endpoint.strip())
    if m:
        return m.group(1), m.group(2).rstrip("/")
    return None, endpoint.strip().rstrip("/")


def _resolve_region(bucket: str) -> str:
    from pyarrow import fs as pafs

    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return "us-east-1"


def _without_userinfo(text: str) -> str:
    m = _USERINFO_RE.match(text)
    return m.group(1) + "***@" + m.group(4) if m else text


def _s3_display(opts: _S3Options) -> str:
    path = f"{opts.bucket}/{opts.prefix}" if opts.prefix else opts.bucket
    query = {"region": opts.region}
    if opts.endpoint:
        query = {"endpoint_override": opts.endpoint, "scheme": opts.scheme, "region": opts.region}
    return f"s3://{path}?{urllib.parse.urlencode(query, safe=':')}"


def _join_display(display: str, rel: str) -> str:
    if display.startswith("s3://"):
        base, sep, query = display.partition("?")
        return f"{base.rstrip('/')}/{rel}{sep}{query}"
    return f"{display.rstrip('/')}/{rel}"
