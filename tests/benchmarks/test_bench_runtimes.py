"""benchmarks.bench_runtimes runs and prints one row per (batch, ranks, runtime); no time is asserted."""
from __future__ import annotations

import json

from benchmarks.bench_runtimes import main, uniform_ranks


def test_uniform_ranks_reach_the_reduction():
    import torch

    import haloc
    from haloc.hardware_loss import layer_flops

    model = haloc.models.create("resnet20").eval()
    x = torch.zeros(1, 3, 32, 32)
    specs = haloc.decomposable_layers(model, x)
    total = haloc.flops(model, x)
    ranks = uniform_ranks(specs, total, 0.5)
    saved = sum(layer_flops(s, s.max_rank) - layer_flops(s, ranks[n]) for n, s in specs.items()) / total
    assert 0.5 <= saved < 0.56


def test_both_runtimes_time_every_config(tmp_path, capsys):
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"model": "resnet20", "ranks": {"layer3.0.conv1": 8, "layer3.1.conv2": 16}}))
    main(["--model", "resnet20", "--image-size", "32", "--batches", "1", "--rounds", "2", "--searched",
          f"onnxruntime={ranks}"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |")]
    labels = {(r.split("|")[2].strip(), r.split("|")[4].strip()) for r in rows}
    assert labels == {(k, rt) for k in ("uniform", "searched for onnxruntime",
                                        "uniform at the FLOPs of 'searched for onnxruntime'")
                      for rt in ("cpu", "onnxruntime")}
