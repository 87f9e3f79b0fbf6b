import pytest
import torch

import haloc
from hw_profiles.signature import LayerSignature, build_module, example_input, profiling_ranks, zigzag_workloads


@pytest.fixture(scope="module")
def specs():
    model = haloc.models.create("resnet20")
    return haloc.decomposable_layers(model, torch.zeros(1, 3, 32, 32))


def test_signature_key_is_stable_and_shared_by_equal_layers(specs):
    a = LayerSignature.from_spec(specs["layer1.0.conv1"], 1, "float32")
    b = LayerSignature.from_spec(specs["layer1.1.conv2"], 1, "float32")
    assert a == b and a.key == "conv2d_i16_o16_k3x3_s1x1_p1x1_d1x1_hw32x32_b1_float32_nobias"
    assert LayerSignature.from_spec(specs["layer1.0.conv1"], 8, "float32").key != a.key


def test_untraced_conv_is_refused():
    spec = haloc.decomposable_layers(haloc.models.create("resnet20"))["layer1.0.conv1"]
    with pytest.raises(haloc.BadInputError, match="example_input"):
        LayerSignature.from_spec(spec, 1, "float32")


def test_profiling_ranks_grid(specs):
    assert profiling_ranks(specs["layer3.0.conv1"], 16) == [0, 1, 16, 32, 48, 64]  # 32 -> 64 channels
    assert profiling_ranks(specs["layer1.0.conv1"], 5) == [0, 1, 5, 10, 15, 16]


@pytest.mark.parametrize("name", ["layer1.0.conv1", "layer2.0.conv1", "fc"])
@pytest.mark.parametrize("rank", [0, 1, 7])
def test_built_module_maps_the_layer_input_to_its_output_shape(specs, name, rank):
    sig = LayerSignature.from_spec(specs[name], 2, "float32")
    x = example_input(sig)
    y = build_module(sig, rank)(x)
    expected = (2, sig.c_out) if sig.op == "linear" else (2, sig.c_out, *sig.output_hw)
    assert tuple(y.shape) == expected


def test_zigzag_workloads_chain(specs):
    sig = LayerSignature.from_spec(specs["layer2.0.conv1"], 1, "int8")  # 16 -> 32, 3x3, stride 2, 32x32
    assert len(zigzag_workloads(sig, 0)) == 1
    first, core, last = zigzag_workloads(sig, 24)
    assert (first.c_in, first.c_out, core.c_in, core.c_out, last.c_in, last.c_out) == (16, 16, 16, 24, 24, 32)
    assert core.stride == (2, 2) and last.in_hw == (16, 16)
    fc = LayerSignature.from_spec(specs["fc"], 1, "int8")
    assert [(w.c_in, w.c_out, w.in_hw) for w in zigzag_workloads(fc, 4)] == [(64, 4, (1, 1)), (4, 10, (1, 1))]
