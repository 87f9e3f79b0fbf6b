"""Artifacts: save/load round trip, ranks JSON validation, ONNX export checked with onnxruntime."""
import json

import pytest
import torch

import haloc
from haloc.errors import BadInputError
from haloc.export import check_onnx, export_onnx, load_compressed, read_ranks_json, save_compressed

RANKS20 = {"layer1.0.conv1": 8, "layer2.1.conv2": [12, 20], "layer3.2.conv1": 30, "fc": 3}


def compressed_resnet20(num_classes=10, ranks=RANKS20):
    torch.manual_seed(0)
    model = haloc.decompose(haloc.models.create("resnet20", num_classes=num_classes), ranks)
    with torch.no_grad():  # move BN statistics off their defaults so the round trip covers buffers
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("num_classes", [10, 4])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, num_classes):
    model = compressed_resnet20(num_classes)
    paths = save_compressed(model, "resnet20", RANKS20, tmp_path / "art")
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["model.pt", "ranks.json"]  # no temp files left
    saved = json.loads((tmp_path / "art" / "ranks.json").read_text())
    assert saved["model"] == "resnet20" and saved["ranks"]["layer2.1.conv2"] == [12, 20]
    assert saved["ranks"]["layer1.0.conv1"] == 8 and saved["num_classes"] == num_classes
    x = torch.randn(3, 3, 32, 32)
    sources = (tmp_path / "art", paths["ranks"], (paths["model"], paths["ranks"]), (paths["ranks"], paths["model"]))
    for source in sources:
        loaded, ranks = load_compressed(source, expected_model="resnet20")
        assert ranks == {**RANKS20, "layer2.1.conv2": (12, 20)}
        assert not loaded.training
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def write_ranks(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ([1, 2], "malformed"),
    ({"model": "resnet20"}, "malformed"),
    ({"model": "resnet20", "ranks": {}, "extra": 1}, r"unknown keys \['extra'\]"),
    ({"model": "resnet99", "ranks": {}}, "unknown model 'resnet99'"),
    ({"model": "resnet20", "ranks": {"layer9.conv": 3}}, "unknown layer 'layer9.conv'"),
    ({"model": "resnet20", "ranks": {"layer1.0.conv1": 17}}, r"layer1.0.conv1.*1\.\.16"),
    ({"model": "resnet20", "ranks": {"layer1.0.conv1": 0}}, r"layer1.0.conv1.*out of range"),
    ({"model": "resnet20", "ranks": {"layer2.0.conv1": [4, 40]}}, r"layer2.0.conv1.*r_out in \[1, 32\]"),
    ({"model": "resnet20", "ranks": {"layer1.0.conv1": 2.5}}, "layer1.0.conv1.*must be an int"),
    ({"model": "resnet20", "ranks": {"conv1": 2}}, "'conv1' cannot be decomposed"),
    ({"model": "resnet20", "ranks": {}, "num_classes": 0}, "num_classes"),
])
def test_read_ranks_json_rejects_bad_files_naming_them(tmp_path, content, match):
    path = write_ranks(tmp_path / "r.json", content)
    with pytest.raises(BadInputError, match=match) as err:
        read_ranks_json(path)
    assert str(path) in str(err.value)


def test_read_ranks_json_for_another_model_and_missing_file(tmp_path):
    path = write_ranks(tmp_path / "r.json", {"model": "vgg16", "ranks": {}})
    assert read_ranks_json(path).model == "vgg16"
    with pytest.raises(BadInputError, match="is for model 'vgg16', not 'resnet20'"):
        read_ranks_json(path, expected_model="resnet20")
    with pytest.raises(BadInputError, match="does not exist"):
        read_ranks_json(tmp_path / "missing.json")


def test_load_compressed_mismatched_or_missing_weights(tmp_path):
    save_compressed(compressed_resnet20(), "resnet20", RANKS20, tmp_path)
    write_ranks(tmp_path / "ranks.json", {"model": "resnet20", "ranks": {"layer1.0.conv1": 4}})
    with pytest.raises(BadInputError, match="do not fit the architecture"):
        load_compressed(tmp_path)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(BadInputError, match="model.pt.*does not exist"):
        load_compressed(tmp_path)
    with pytest.raises(BadInputError, match="does not exist"):
        load_compressed(tmp_path / "nowhere")


def test_save_compressed_validates_ranks(tmp_path):
    with pytest.raises(BadInputError, match="unknown layer"):
        save_compressed(compressed_resnet20(), "resnet20", {"nope": 3}, tmp_path)
    assert not list(tmp_path.iterdir())


def test_onnx_export_of_decomposed_resnet20_agrees(tmp_path):
    model = compressed_resnet20()
    x = torch.randn(2, 3, 32, 32)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one self-contained file
    assert check_onnx(path, model, x) < 1e-4
    assert check_onnx(path, model, torch.randn(5, 3, 32, 32)) < 1e-4  # dynamic batch
    # A model that is not the exported one is caught.
    other = compressed_resnet20()
    with torch.no_grad():
        other.fc.last.weight.add_(0.5)
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        check_onnx(path, other, x)


@pytest.mark.slow
def test_onnx_export_of_decomposed_resnet18_agrees(tmp_path):
    # One layer of each kind (Tucker-2 3x3, strided SVD 1x1, SVD linear): decomposing all of them
    # spends a minute in SVDs of 512 x 4608 matrices, which tests nothing more about export.
    ranks = {"layer1.0.conv1": 16, "layer4.1.conv2": [64, 128], "layer4.0.downsample.0": 96, "fc": 64}
    model = haloc.decompose(haloc.models.create("resnet18"), ranks).eval()
    x = torch.randn(1, 3, 224, 224)
    path = export_onnx(model, x, tmp_path / "r18.onnx", dynamic_batch=False)
    assert check_onnx(path, model, x, rtol=1e-3, atol=1e-4) < 1e-3
