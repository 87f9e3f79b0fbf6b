"""Shared fixtures live in tests/fixtures/ (a real moto S3 server, a real local Ray cluster)."""
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray_cluster"]
