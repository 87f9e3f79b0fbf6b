"""The user's own model and data (issue 14 items 1-4): torchvision:NAME and package.module:factory
models, package.module:factory data, the generic `pipelines.compress`, and `--py-modules` shipping a
factory that lives only in the test's own folder to every node of the two-node test cluster."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from haloc.errors import BadInputError
from tests.fixtures.fake_data import write_fake_cifar10, write_fake_imagefolder

ROOT = Path(__file__).resolve().parents[2]


def write_user_package(folder: Path, name: str) -> Path:
    """A package of the user's: a model factory (with and without num_classes) and a data factory."""
    pkg = folder / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def tiny_net(num_classes=10):
            return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

        def fixed_head():
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))

        def not_a_model():
            return 42
    """))
    (pkg / "data.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset

        class Named(TensorDataset):
            classes = ["a", "b", "c", "d"]

        def blobs():
            g = torch.Generator().manual_seed(0)
            y = torch.arange(96) % 4
            x = torch.randn(96, 3, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
            return Named(x[:64], y[:64]), Named(x[64:], y[64:])

        def unnamed():
            x, y = torch.zeros(8, 3, 12, 12), torch.zeros(8, dtype=torch.long)
            return TensorDataset(x, y), TensorDataset(x, y)

        def wrong():
            return [1, 2, 3]
    """))
    return pkg


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    name = f"userpkg_{tmp_path.name.replace('-', '_')}"  # a fresh module name per test: no import cache
    pkg = write_user_package(tmp_path / "src", name)
    monkeypatch.syspath_prepend(str(pkg.parent))
    return name


def test_torchvision_models_resolve_and_decompose():
    import haloc

    spec = haloc.models.ModelSpec("torchvision:resnet18", 10, (3, 32, 32))
    assert spec.create().eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert "layer1.0.conv1" in haloc.models.layer_specs(spec)
    assert haloc.models.input_size("torchvision:resnet18") == (3, 224, 224)
    with pytest.raises(BadInputError, match="torchvision has no classification model 'resnet19'"):
        haloc.models.ModelSpec("torchvision:resnet19")


def test_factory_models_take_the_class_count_or_say_their_own(user_pkg):
    import haloc

    net = haloc.models.create(f"{user_pkg}.models:tiny_net", num_classes=5)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    fixed = f"{user_pkg}.models:fixed_head"
    assert haloc.models.num_classes(fixed) == 7  # read from the last Linear layer
    with pytest.raises(BadInputError, match="has a 7-class head, but 3 classes are needed"):
        haloc.models.create(fixed, num_classes=3)
    with pytest.raises(BadInputError, match="does not say its input size; pass image_size=S"):
        haloc.models.input_size(fixed)
    with pytest.raises(BadInputError, match="returned a int, not an nn.Module"):
        haloc.models.create(f"{user_pkg}.models:not_a_model")
    with pytest.raises(BadInputError, match="cannot be imported .*py_modules=FOLDER"):
        haloc.models.ModelSpec("no_such_pkg_xyz.models:net")
    with pytest.raises(BadInputError, match="has no 'nope'"):
        haloc.models.ModelSpec(f"{user_pkg}.models:nope")


def test_factory_data_says_what_it_is(user_pkg):
    from haloc import data as hdata

    assert hdata.is_factory_path(f"{user_pkg}.data:blobs") and not hdata.is_factory_path("s3://b/x")
    assert not hdata.is_factory_path("/data/imagenet") and not hdata.is_factory_path("a b:c")
    facts = hdata.data_facts("factory", f"{user_pkg}.data:blobs")
    assert (facts.num_classes, facts.image_side) == (4, 16)
    assert facts.description == f"datasets from {user_pkg}.data:blobs (64 train / 32 val samples, 4 classes)"
    train, val = hdata.build_datasets(hdata.DataConfig(kind="factory", root=f"{user_pkg}.data:blobs"))
    assert (len(train), len(val)) == (64, 32)
    with pytest.raises(BadInputError, match="must return \\(train, val\\)"):
        hdata.factory_datasets(f"{user_pkg}.data:wrong")


def spec_of(*argv):
    from pipelines.cli import build_parser, spec_from_args
    from pipelines.presets import COMPRESS

    return spec_from_args(build_parser(COMPRESS).parse_args(list(argv)), COMPRESS)


def test_the_generic_pipeline_reads_model_and_data_from_the_user(user_pkg, tmp_path):
    spec = spec_of("--preset", "quick", "--model", f"{user_pkg}.models:tiny_net", "--data", f"{user_pkg}.data:blobs",
                   "--store", str(tmp_path / "s"))
    assert (spec.pipeline, spec.dataset, spec.num_classes, spec.image_size) == ("compress", "factory", 4, 16)
    assert spec.run_id.startswith(f"compress-quick-{user_pkg}.data-blob"[:64])  # the data names the run (<= 64)
    with pytest.raises(BadInputError, match="needs --model"):
        spec_of("--preset", "quick", "--data", f"{user_pkg}.data:blobs")
    with pytest.raises(BadInputError, match="no `classes` attribute .* pass --num-classes"):
        spec_of("--preset", "quick", "--model", "resnet20", "--data", f"{user_pkg}.data:unnamed")
    assert spec_of("--preset", "quick", "--model", "resnet20", "--data", f"{user_pkg}.data:unnamed",
                   "--num-classes", "2").num_classes == 2
    with pytest.raises(BadInputError, match="--input-size 1 32 32: the data loaders give RGB squares"):
        spec_of("--preset", "demo", "--model", "resnet20", "--input-size", "1", "32", "32")
    assert spec_of("--preset", "demo", "--model", "torchvision:resnet18",
                   "--input-size", "3", "48", "48").image_size == 48


def test_the_generic_pipeline_tells_imagefolder_from_cifar(tmp_path):
    folder = write_fake_imagefolder(tmp_path / "birds", classes=3, per_class=2, size=40)
    spec = spec_of("--preset", "quick", "--model", "resnet20", "--data", str(folder))
    assert (spec.dataset, spec.num_classes, spec.image_size) == ("imagenet", 3, 40)
    cifar = write_fake_cifar10(tmp_path / "cifar")
    assert spec_of("--preset", "quick", "--model", "resnet20", "--data", str(cifar)).dataset == "cifar10"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.txt").write_text("x")
    with pytest.raises(BadInputError, match="neither an ImageFolder tree .* nor CIFAR-10 python batches"):
        spec_of("--preset", "quick", "--model", "resnet20", "--data", str(tmp_path / "odd"))


# ---- end to end on the two-node test cluster ------------------------------------------------------

SMALL = ["--seeds", "0", "--search-epochs", "2", "--search-steps-per-epoch", "2", "--finetune-epochs", "1",
         "--finetune-steps-per-epoch", "2", "--pretrain-epochs", "1", "--pretrain-rounds", "1",
         "--calibration-samples", "3",
         "--hardware", "asic", "--budget-metric", "flops", "--no-progress"]


def run_compress(cluster, tmp_path, *extra):
    cmd = [sys.executable, "-m", "pipelines.compress", *SMALL, "--store", str(tmp_path / "store"),
           "--address", cluster.address, *extra]
    # PYTHONPATH names only the project: the user's package reaches the driver and every node by --py-modules
    env = dict(cluster.env, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.pipeline
def test_a_factory_model_on_factory_data_through_the_cluster(ray_cluster, tmp_path):
    name = f"owndata_{tmp_path.name.replace('-', '_')}"
    pkg = write_user_package(tmp_path / "only_here", name)
    proc = run_compress(ray_cluster, tmp_path, "--preset", "quick", "--model", f"{name}.models:tiny_net",
                        "--data", f"{name}.data:blobs", "--py-modules", str(pkg), "--run-id", "own",
                        "--budgets", "0.8", "--rank-step", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "store" / "own" / "report.json").read_text())
    assert report["model"] == f"{name}.models:tiny_net"
    assert report["dataset"] == f"datasets from {name}.data:blobs (64 train / 32 val samples, 4 classes)"
    (result,) = report["results"]
    assert result["budget_check"]["flops"]["met"] and result["flops"] <= 0.8 * report["baseline"]["flops"]
    assert "2" in result["ranks"] and "0" not in result["ranks"]  # tiny_net's second conv; its first is the stem


@pytest.mark.slow
@pytest.mark.pipeline
def test_a_torchvision_model_through_the_cluster(ray_cluster, tmp_path):
    proc = run_compress(ray_cluster, tmp_path, "--preset", "demo", "--model", "torchvision:resnet18",
                        "--demo-size", "64", "32", "--run-id", "tv", "--budgets", "0.5", "--rank-step", "64")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "store" / "tv" / "report.json").read_text())
    (result,) = report["results"]
    assert report["model"] == "torchvision:resnet18" and "layer4.1.conv2" in report["layers"]["names"]
    assert result["budget_check"]["flops"]["met"] and result["flops"] <= 0.5 * report["baseline"]["flops"]
    import haloc

    # what was found loads back onto torchvision's own definition of the model
    model, ranks = haloc.load_compressed(tmp_path / "store" / Path(result["artifacts"]["ranks"]).parent)
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10) and ranks == result["ranks"]
    import torchvision

    mine, _ = haloc.load_compressed(tmp_path / "store" / Path(result["artifacts"]["ranks"]).parent,
                                    model=torchvision.models.resnet18(num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(mine(x), model(x), atol=1e-5)
