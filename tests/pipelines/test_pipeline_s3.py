"""The pipeline with its store AND its data on S3 (a real moto server on loopback): real CIFAR-10
python batches uploaded to a bucket, synced once to each node's data cache, every artifact written
to the bucket, the keys only in the environment (never in what the run writes)."""
from __future__ import annotations

import json

import pytest

from tests.pipelines.test_pipeline_demo import ROOT, SMALL, check_contract  # noqa: F401


@pytest.mark.slow
@pytest.mark.pipeline
def test_store_and_data_on_s3(ray_cluster, s3_server, tmp_path):
    import subprocess
    import sys

    from tests.fixtures.fake_data import write_fake_cifar10

    bucket = s3_server.make_bucket("pipeline-s3")
    local = write_fake_cifar10(tmp_path / "cifar", n_train=64, n_test=32, seed=1)
    client = s3_server.client()
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        client.upload_file(str(path), bucket, f"cifar/{path.relative_to(local).as_posix()}")
    store_uri, data_uri = s3_server.uri(bucket, "runs"), s3_server.uri(bucket, "cifar")
    args = [*[a for a in SMALL if a not in ("--demo-size", "64", "32")], "--preset", "quick"]
    cmd = [sys.executable, "-m", "pipelines.cifar_resnet20", *args, "--data", data_uri, "--store", store_uri,
           "--run-id", "s3run", "--address", ray_cluster.address, "--hardware", "asic"]
    env = dict(ray_cluster.env, PYTHONPATH=str(ROOT), HALOC_DATA_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/s3run/")["Contents"])
    assert "runs/s3run/report.json" in keys and "runs/s3run/report.html" in keys
    assert "runs/s3run/luts/asic.parquet" in keys and "runs/s3run/selected.json" in keys
    report = json.loads(client.get_object(Bucket=bucket, Key="runs/s3run/report.json")["Body"].read())
    # real (fake-content) CIFAR files, named by where they are: not labeled demo
    assert report["dataset"].startswith("CIFAR-10-format batches at s3://") and "demo" not in report["dataset"]
    for r in report["results"]:
        for path in r["artifacts"].values():
            assert f"runs/{path}" in keys, path
    # the driver synced the data once into its cache, as a node would
    cached = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(cached) == 1 and any(cached[0].rglob("test_batch"))
    # the keys were only in the environment: nothing the run wrote or printed holds them
    secret = s3_server.secret_key
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert secret.encode() not in body, key
    assert secret not in proc.stdout and secret not in proc.stderr
