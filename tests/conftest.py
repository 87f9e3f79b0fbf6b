"""Shared fixtures live in tests/fixtures/ (a real moto S3 server, a real local Ray cluster).

Tiers (scripts/test.sh --fast runs the first; the README's Tests section gives their times):
- fast: everything that needs no Ray cluster, no subprocess pipeline and no S3 server;
- the markers below say what each other test needs. They are given here from what a test uses (its
  fixtures, its folder), so that a new test is sorted without anyone remembering to mark it:
  `ray` (the session's two-node Ray), `s3` (the moto S3 server), `cluster_box` (network-namespace
  hosts), `pipeline` (a whole pipeline run in a subprocess, marked by its module), `slow` (long).

The timing guard: a test outside those markers whose call takes more than `fast_test_limit_s`, by the
lesser of its wall and CPU time (pyproject.toml), fails, naming the marker to give it. The fast tier
stays fast only if it is guarded.
"""
import os
import tempfile

import pytest

CPU_SECONDS = pytest.StashKey[float]()

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The ZigZag disk cache of this test session (inherited by the Ray nodes the fixtures start): tests
# never read results a developer's earlier runs left in ~/.cache.
os.environ.setdefault("HALOC_DATA_CACHE", tempfile.mkdtemp(prefix="haloc-data-"))
os.environ.setdefault("HALOC_ZIGZAG_CACHE", os.path.join(tempfile.mkdtemp(prefix="haloc-zz-"), "zigzag.sqlite"))

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray_cluster", "tests.fixtures.demo_run"]

TIER_MARKERS = ("slow", "ray", "s3", "cluster_box", "pipeline")
_FIXTURE_MARKERS = {"ray_cluster": "ray", "s3_server": "s3", "s3_store_uri": "s3", "s3_auth_server": "s3",
                    "asic_run": "pipeline"}


def pytest_addoption(parser):
    parser.addini("fast_test_limit_s", "seconds a test outside the tier markers may take", default="10")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        if "cluster_box" in item.path.parts:
            item.add_marker("cluster_box")


def in_fast_tier(item) -> bool:
    return not any(item.get_closest_marker(m) for m in TIER_MARKERS)


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (subprocesses a test ran)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = _cpu_seconds()
    yield
    item.stash[CPU_SECONDS] = _cpu_seconds() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The guard counts the lesser of the call's wall time and its CPU time: a busy machine stretches
    the wall time of a test that costs little (CI's full suite runs beside its own Ray cluster), and
    torch's threads make the CPU time of a short test add up faster than the clock; a test over the
    limit by both is slow whatever the machine."""
    outcome = yield
    report = outcome.get_result()
    limit = float(item.config.getini("fast_test_limit_s"))
    if call.when != "call" or not report.passed or not in_fast_tier(item):
        return
    cost = min(call.duration, item.stash.get(CPU_SECONDS, call.duration))
    if cost > limit:
        report.outcome = "failed"
        report.longrepr = (f"timing guard: {item.nodeid} took {call.duration:.1f} s ({cost:.1f} s by the lesser "
                           f"of wall and CPU time), over the fast tier's {limit:g} s (tests/conftest.py): make it "
                           f"smaller, or mark it with what it needs ({', '.join(TIER_MARKERS)}) so that it leaves "
                           "the fast tier")
