"""Your own model: compress a torchvision ResNet-18 built here (no download), save it, and restore it
onto a fresh instance of your definition, by load_compressed(model=...) and by the ranks-JSON route;
the ONNX export carries what it is (metadata_props) for deployment."""
import json

import pytest
import torch
import torchvision

import haloc
from haloc.errors import BadInputError
from haloc.export import check_onnx, export_onnx, load_compressed, read_ranks_json, save_compressed

# one layer of each kind: Tucker-2 3x3 (int and pair), strided SVD 1x1, SVD linear
RANKS = {"layer1.0.conv1": 16, "layer3.1.conv2": [64, 128], "layer2.0.downsample.0": 32, "fc": 8}


def my_model():
    return torchvision.models.resnet18(weights=None, num_classes=10)


@pytest.fixture(scope="module")
def compressed():
    torch.manual_seed(0)
    small = haloc.decompose(my_model(), RANKS).eval()
    with torch.no_grad():  # statistics off their defaults, so buffers are part of what must round-trip
        for m in small.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return small


def test_load_compressed_onto_your_own_definition(tmp_path, compressed):
    save_compressed(compressed, "my-resnet18", RANKS, tmp_path)
    saved = json.loads((tmp_path / "ranks.json").read_text())
    assert saved["model"] == "my-resnet18" and saved["num_classes"] == 10
    assert saved["ranks"]["layer3.1.conv2"] == [64, 128]
    x = torch.randn(2, 3, 64, 64)
    want = compressed(x)

    fresh = my_model()
    restored, ranks = load_compressed(tmp_path, model=fresh)
    assert ranks == {**RANKS, "layer3.1.conv2": (64, 128)}
    assert not restored.training and type(restored) is torchvision.models.ResNet
    assert isinstance(restored.layer3[1].conv2, haloc.Tucker2Conv) and restored.layer3[1].conv2.rank == (64, 128)
    torch.testing.assert_close(restored(x), want, rtol=0, atol=0)
    assert type(fresh.layer1[0].conv1) is torch.nn.Conv2d  # a copy was decomposed, yours is untouched

    mine = my_model()
    same, _ = load_compressed(tmp_path / "ranks.json", model=mine, inplace=True)
    assert same is mine and isinstance(mine.fc, haloc.SVDLinear)
    torch.testing.assert_close(mine(x), want, rtol=0, atol=0)


def test_ranks_json_route_decompose_then_load_state_dict(tmp_path, compressed):
    save_compressed(compressed, "my-resnet18", RANKS, tmp_path)
    ranks = json.loads((tmp_path / "ranks.json").read_text())["ranks"]
    model = haloc.decompose(my_model(), ranks)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), compressed(x), rtol=0, atol=0)
    # the same ranks, validated against your definition
    assert read_ranks_json(tmp_path / "ranks.json", model=my_model()).ranks == model_ranks(RANKS)


def model_ranks(ranks):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ranks.items()}


def test_a_definition_that_does_not_fit_is_refused_naming_it(tmp_path, compressed):
    save_compressed(compressed, "my-resnet18", RANKS, tmp_path)
    with pytest.raises(BadInputError, match=r"weights .*model.pt.* do not fit .*your ResNet"):
        load_compressed(tmp_path, model=torchvision.models.resnet18(weights=None, num_classes=20))
    with pytest.raises(BadInputError, match=r"'fc': rank 8 out of range.*checked against your ResNet"):
        load_compressed(tmp_path, model=torchvision.models.resnet18(weights=None, num_classes=5))
    with pytest.raises(BadInputError, match=r"unknown layer 'layer3.1.conv2'.*before decomposition"):
        load_compressed(tmp_path, model=haloc.decompose(my_model(), {"layer3.1.conv2": 8}))
    with pytest.raises(BadInputError, match="is for model 'my-resnet18', not 'resnet18'"):
        load_compressed(tmp_path, expected_model="resnet18", model=my_model())


def test_save_compressed_checks_your_ranks_against_the_decomposed_model(tmp_path, compressed):
    for ranks, match in (({"layer1.0.conv1": 12}, r"has rank \(16, 16\)"),
                         ({"layer1.0.conv2": 16}, "is a Conv2d, not a decomposed layer"),
                         ({"layer9": 4}, "'layer9' is not in the model"),
                         ({"fc": [8, 8]}, "must be an int$")):
        with pytest.raises(BadInputError, match=match):
            save_compressed(compressed, "my-resnet18", ranks, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_onnx_export_carries_its_metadata(tmp_path, compressed):
    import onnx
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 64)
    path = export_onnx(compressed, x, tmp_path / "m.onnx", dynamic_batch=False, model_name="my-resnet18",
                       ranks=model_ranks(RANKS), metadata={"dataset": "my photos"})
    assert check_onnx(path, compressed, x, rtol=1e-3, atol=1e-4) < 1e-3
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["model"] == "my-resnet18" and meta["haloc_version"] == haloc.__version__
    assert json.loads(meta["input_size"]) == [3, 64, 64] and meta["dataset"] == "my photos"
    assert json.loads(meta["ranks"]) == RANKS
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props == meta
    # every export carries the version and the input size, even without a name or ranks
    bare = export_onnx(compressed, x, tmp_path / "bare.onnx", dynamic_batch=False)
    props = {p.key: p.value for p in onnx.load(str(bare)).metadata_props}
    assert props == {"haloc_version": haloc.__version__, "input_size": "[3, 64, 64]"}


def test_onnx_metadata_must_be_strings(tmp_path, compressed):
    with pytest.raises(BadInputError, match="'epochs': 3: keys and values must be strings"):
        export_onnx(compressed, torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", metadata={"epochs": 3})
    assert not list(tmp_path.iterdir())
