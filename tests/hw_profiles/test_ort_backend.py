"""The onnxruntime hardware profile: layers and whole models timed as ONNX in ONNX Runtime (real
sessions, no stand-ins), selectable like `cpu`; and timed profiles that share a node take turns."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from hw_profiles.measure import measure_models, measure_rows
from hw_profiles.ort_backend import OrtModule
from hw_profiles.profile import get_profile
from hw_profiles.signature import LayerSignature, build_module, example_input
from orchestrator.cluster import measurement_waves


def quick(profile):
    from dataclasses import replace

    return replace(profile, repeats=5, min_run_time_s=0.02, warmup=2)


def test_the_profile_loads_like_cpu():
    p = get_profile("onnxruntime")
    assert (p.backend, p.device, p.ray_resource, p.is_simulator) == ("onnxruntime", "cpu", "hw_cpu", False)


def test_an_ort_module_computes_what_the_torch_layer_computes():
    sig = LayerSignature("conv2d", 16, 32, (3, 3), (1, 1), (1, 1), input_hw=(8, 8))
    torch.manual_seed(0)
    layer = build_module(sig, 4).eval()
    x = example_input(sig, "cpu")
    (y,) = OrtModule(layer, x, threads=1)(x)
    with torch.no_grad():
        assert np.allclose(y, layer(x).numpy(), atol=1e-4)


def test_rows_and_whole_models_are_timed_in_onnxruntime():
    p = quick(get_profile("onnxruntime"))
    sig = LayerSignature("conv2d", 16, 32, (3, 3), (1, 1), (1, 1), input_hw=(8, 8))
    rows = measure_rows(p, [(sig, 4), (sig, 0)])
    assert [r.rank for r in rows] == [4, 0] and all(r.latency_median_ms > 0 for r in rows)
    assert all('"onnxruntime"' in r.software for r in rows) and rows[0].hardware == "onnxruntime"
    out = measure_models(p, {"name": "resnet20", "num_classes": 10, "input_size": [3, 32, 32]},
                         [{}, {"layer3.0.conv1": 8}], batch=1, rounds=4)
    assert len(out) == 2 and all(o["median_ms"] > 0 and len(o["samples_ms"]) == 4 for o in out)


def _placement(**nodes_of):
    return {name: [(SimpleNamespace(node_id=n), {}) for n in nodes] for name, nodes in nodes_of.items()}


def test_timed_profiles_sharing_a_node_take_turns():
    cpu, ort, asic = get_profile("cpu"), get_profile("onnxruntime"), get_profile("asic")
    one_node = measurement_waves([cpu, ort, asic], _placement(cpu=["a"], onnxruntime=["a"], asic=["a"]))
    assert [[p.name for p in w] for w in one_node] == [["asic"], ["cpu"], ["onnxruntime"]]
    apart = measurement_waves([cpu, ort, asic], _placement(cpu=["a"], onnxruntime=["b"], asic=["c"]))
    assert [sorted(p.name for p in w) for w in apart] == [["asic", "cpu", "onnxruntime"]]
