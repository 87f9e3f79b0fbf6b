"""Every workaround for the pinned Ray version (2.60.0, pyproject.toml) in one place.

Each function names the Ray behaviour it works around and why. Most touch Ray internals, so a Ray
upgrade must re-check each one; the tests that guard them are named beside each.
"""
from __future__ import annotations

import os

RAY_VERSION = "2.60.0"  # what these workarounds were written against

_AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def keep_embedded_ray_on_loopback() -> None:
    """Ray 2.60: `ray.init(_node_ip_address="127.0.0.1")` still turns 127.0.0.1 into the machine's
    reachable IP, and GCS, raylet and workers then listen on every interface. Ray's laptop-mode switch
    (read at call time, inherited by the processes the embedded Ray starts) keeps them on loopback.
    Guarded by tests/reliability/test_security.py (embedded Ray listens on loopback only)."""
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False  # private


def keep_keys_out_of_runtime_envs() -> None:
    """Ray Tune 2.60 copies the driver's AWS_* variables into every trial actor's runtime_env, which
    Ray logs on each node (runtime_env_agent.log) and keeps in the GCS. Every node has its own
    credentials (docs/cluster.md), so the keys are not handed around. Private; guarded by
    tests/reliability/test_security.py (fake keys found nowhere)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(_AWS_SECRETS)


def use_token_auth_if_a_token_exists() -> None:
    """Ray 2.60 reads RAY_AUTH_MODE once, when it is imported, and with an explicit address it does
    not turn token authentication on by itself even when a token exists: set the mode before Ray is
    imported (a user's own RAY_AUTH_MODE wins)."""
    from pathlib import Path

    has_token = os.environ.get("RAY_AUTH_TOKEN") or Path(
        os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).is_file()
    if "RAY_AUTH_MODE" not in os.environ and has_token:
        os.environ["RAY_AUTH_MODE"] = "token"


def ensure_auth_token() -> None:
    """Ray 2.60 clusters started with `ray start` authenticate with a token once one exists; make the
    machine's token (~/.ray/auth_token) if there is none, as `ray get-auth-token --generate` does."""
    import subprocess
    import sys
    from pathlib import Path

    if os.environ.get("RAY_AUTH_MODE") == "disabled" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    if Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).is_file():
        return
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "get-auth-token", "--generate"], check=True, capture_output=True,
                   env=dict(os.environ, RAY_AUTH_MODE="token"))


def enable_token_auth() -> None:
    """Ray 2.60 turns token authentication on by default once a token exists, but a driver given an
    explicit address does not pick up RAY_AUTH_MODE=token set after Ray was imported: re-read its
    config (private). Used where a driver joins a token-authenticated cluster."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()


def dashboard_url() -> str | None:
    """host:port of the dashboard of the connected cluster. A driver that joined a running cluster
    has no URL of its own in Ray 2.60; the dashboard's address is in the cluster's internal KV store
    (private calls). None when unknown: a run never fails over the dashboard's address."""
    import ray

    try:
        return ray._private.worker.get_dashboard_url() or ray._private.services.get_webui_url_from_internal_kv()
    except Exception:
        return None


def fit_interruptibly(trainer):
    """`trainer.fit()` of a Ray Train 2.60 (Train V2) trainer that a signal interrupts like any stage.

    Train V2 installs its own SIGINT handler inside `fit()` (a graceful abort, after which `fit()`
    returns an aborted result and the driver cannot tell Ctrl-C from a failure) and none for SIGTERM.
    Here both signals abort the run's controller the same graceful way, so no worker keeps training on
    a cluster, then raise `Interrupted` (exit 130/143). Private (`_register_sigint_handler`); guarded by
    tests/pipelines/test_failures.py (a signal in the weights or finetune stage)."""
    import signal

    import ray

    from .interrupts import install, raise_for

    def register(controller):
        def handler(signum, _frame):
            try:
                ray.get(controller.abort.remote(), timeout=30)
            except Exception:
                pass
            raise_for(signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    if not hasattr(trainer, "_register_sigint_handler"):
        raise RuntimeError(f"Ray {ray.__version__}: the trainer has no _register_sigint_handler; "
                           "re-check orchestrator/ray_compat.fit_interruptibly for this Ray version")
    trainer._register_sigint_handler = register  # the instance attribute shadows Train's method
    try:
        return trainer.fit()
    finally:
        install()  # ours again, for the stages that follow


def route_worker_logs(handler) -> None:
    """Ray 2.60 prints forwarded worker output on the driver through one handler of its stdstream
    dispatcher ("ray_print_logs", added by `ray.init(log_to_driver=True)`). `handler(data)` (Ray's dict:
    lines, pid, actor_name / task_name, is_err) replaces it, so the run decides where worker lines go
    (orchestrator.run_output); `None` puts Ray's own printer back. Private; guarded by
    tests/pipelines/test_terminal.py (no worker line on the terminal, progress lines there)."""
    import functools

    from ray._private import worker as ray_worker

    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    dispatcher.remove_handler("ray_print_logs")
    if handler is None:
        ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
        handler = functools.partial(ray_worker.print_to_stdstream, ignore_prefix=ignore_prefix)
    dispatcher.add_handler("ray_print_logs", handler)
