"""Data sets from S3, synced once to a local cache on each node, then read locally.

`local_data_path(uri)` returns a local folder for `uri`: a local path as it is; an `s3://` URI
downloaded once into `$HALOC_DATA_CACHE` (default `~/.cache/haloc/data`) under a name derived from
the URI (credentials and query options left out). The copy lands in a temp folder and is renamed
into place when complete, so a crash mid-download is never taken as a finished copy, and two
processes on one node race safely (the loser drops its copy).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("HALOC_DATA_CACHE", Path.home() / ".cache" / "haloc" / "data"))


def cache_key(uri: str) -> str:
    bare = uri.split("?", 1)[0]
    if "@" in bare.split("://", 1)[-1].split("/", 1)[0]:  # s3://KEY:SECRET@bucket/...: keep the bucket only
        scheme, rest = bare.split("://", 1)
        bare = f"{scheme}://{rest.split('@', 1)[1]}"
    name = bare.rstrip("/").rsplit("/", 1)[-1] or "data"
    return f"{name}-{hashlib.sha256(bare.encode()).hexdigest()[:12]}"


def local_data_path(uri: str) -> str:
    if uri.startswith("pickled:"):  # haloc.data.PICKLED_PREFIX: the folder behind it is synced like any other
        return "pickled:" + local_data_path(uri[len("pickled:"):])
    if "://" not in uri or uri.startswith("file://"):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    from pyarrow import fs

    target = cache_root() / cache_key(uri)
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # Credentials come from the standard AWS environment; the endpoint from the URI's query options.
        source, path = fs.FileSystem.from_uri(uri)
        fs.copy_files(path, str(tmp), source_filesystem=source, destination_filesystem=fs.LocalFileSystem())
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def local_data_config(data: dict) -> dict:
    """A haloc DataConfig dict whose `root` is local on this node (an s3:// root synced to the cache)."""
    data = dict(data)
    if data.get("root"):
        data["root"] = local_data_path(data["root"])
    return data
