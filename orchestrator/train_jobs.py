"""Ray Train jobs of the project's one training loop (workers/finetune_loop.py): the fine-tune of
each selected architecture, and the training of the original model when no weights are given.

A job is a `TorchTrainer` whose run folder lies in the store; started again with the same name and
folder it resumes from its last checkpoint (Ray 2.60 runs Ray Train V2: `TorchTrainer.restore` is
gone, the run folder is what resumes). `run_job` returns the last checkpoint's TrainState.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from haloc.errors import BadInputError

log = logging.getLogger(__name__)
# Ray Train's controller polls its workers every 2 s by default, so a job waits up to 2 s at its start
# and again at its end: short jobs (the demo's, of seconds) spent a fifth of their time waiting. Polled
# every 0.5 s, the tests' smallest pipeline run (tests/fixtures/demo_run.py, embedded Ray) had its
# weights and fine-tune stages take 11.8 and 11.0 s instead of 13.8 and 13.7 s (one pair of runs,
# 2026-12-08; not a BENCHMARKS.md figure). Ray passes the driver's value to the controller
# (ray.train.v2's ENV_VARS_TO_PROPAGATE); a user's own setting wins.
HEALTH_CHECK_ENV, HEALTH_CHECK_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


@dataclass(frozen=True)
class Workers:
    num_workers: int = 2
    # None: a node's CPUs shared among the workers, at least 1 each. Ray gives a worker as many torch
    # threads as CPUs (OMP_NUM_THREADS), so a lone worker with 1 CPU trained on one core of two.
    cpus_per_worker: float | None = None
    use_gpu: bool | None = None  # None: GPU workers when the cluster has enough GPUs
    max_failures: int = 1  # worker-group restarts from the last checkpoint


def scaling(workers: Workers, what: str):
    """ScalingConfig checked against the cluster: an infeasible request would wait forever."""
    import ray
    from ray.train import ScalingConfig

    total = ray.cluster_resources()
    gpus = total.get("GPU", 0)
    use_gpu = workers.use_gpu if workers.use_gpu is not None else gpus >= 1
    n = workers.num_workers
    if use_gpu:
        if gpus < 1:
            raise BadInputError(f"{what}: use_gpu=True but the cluster has no GPU; set use_gpu to None or False")
        if n > gpus:
            log.warning("%s: %d workers requested, the cluster has %g GPUs: using %d", what, n, gpus, int(gpus))
            n = int(gpus)
        return ScalingConfig(num_workers=n, use_gpu=True)
    per_node = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
    cpus = workers.cpus_per_worker
    if cpus is None:
        cpus = float(max(1, int(per_node // n)))
    if per_node < cpus or total.get("CPU", 0) < n * cpus:
        raise BadInputError(f"{what}: {n} workers x {cpus:g} CPU do not fit the cluster "
                            f"({total.get('CPU', 0):g} CPUs, at most {per_node:g} on one node); "
                            "lower the number of workers or the CPUs per worker")
    return ScalingConfig(num_workers=n, use_gpu=False, resources_per_worker={"CPU": cpus})


def run_job(store, name: str, loop_config: dict, workers: Workers, what: str):
    """Run (or resume) the job `name` in the store folder `store`; returns (TrainState, result metrics)."""
    from pathlib import Path

    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from haloc.train import TrainState
    from workers.finetune_loop import STATE_FILE, train_loop_per_worker

    from .ray_compat import fit_interruptibly

    run_config = RunConfig(name=name, storage_path=store.root_path, storage_filesystem=store.filesystem,
                           checkpoint_config=CheckpointConfig(num_to_keep=2),
                           failure_config=FailureConfig(max_failures=workers.max_failures))
    # every epoch's state also goes to <job>/snapshot.pt, beside Ray Train's checkpoints: an epoch whose
    # report an interrupt cut off before Ray Train registered it resumes from there (workers/finetune_loop)
    loop_config = dict(loop_config, snapshot=_snapshot_uri(store, name))
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_S)
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=loop_config,
                           scaling_config=scaling(workers, what), run_config=run_config)
    try:
        result = fit_interruptibly(trainer)
    except Exception as e:
        _full_store(e, store, name, what)
        raise
    if result.error:
        _full_store(result.error, store, name, what)
        raise RuntimeError(f"{what} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"{what} ended without a checkpoint; see the Ray Train logs under {store.uri_of(name)}")
    with result.checkpoint.as_directory() as folder:
        return TrainState.load(Path(folder) / STATE_FILE), dict(result.metrics or {})


def _full_store(error: BaseException, store, name: str, what: str) -> None:
    """Ray Train's checkpoint upload into a full local store: the store's one-line error (exit 1)."""
    if "No space left on device" in str(error):
        from .store import StoreWriteError

        raise StoreWriteError(28, f"store {store.uri}: cannot write the checkpoints of {what} under {name!r} (No "
                                  "space left on device); free space on that disk, or choose another --store "
                                  "(rerun the same command to resume)") from None


SNAPSHOT = "snapshot.pt"


def _snapshot_uri(store, name: str) -> str:
    """Where the job's workers write and read the snapshot: a local path, or the store's URI of it."""
    if not store.is_remote:
        from pathlib import Path

        return str(Path(store.root_path) / name / SNAPSHOT)
    return store.uri_of(f"{name}/{SNAPSHOT}")
