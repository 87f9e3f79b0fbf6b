"""Shared fixtures live in tests/fixtures/ (a real moto S3 server, a real local Ray cluster)."""
import os

import tempfile

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The ZigZag disk cache of this test session (inherited by the Ray nodes the fixtures start): tests
# never read results a developer's earlier runs left in ~/.cache.
os.environ.setdefault("HALOC_DATA_CACHE", tempfile.mkdtemp(prefix="haloc-data-"))
os.environ.setdefault("HALOC_ZIGZAG_CACHE", os.path.join(tempfile.mkdtemp(prefix="haloc-zz-"), "zigzag.sqlite"))

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray_cluster"]
