"""Data sets on real files in their real formats (generated small), the demo set, splits and loaders."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from haloc.data import (
    DEMO_NAME,
    CIFAR10Batches,
    DataConfig,
    build_datasets,
    check_imagefolder_layout,
    cifar10_datasets,
    dataset_label,
    demo_dataset,
    imagenet_datasets,
    make_loader,
    seed_epoch,
    split_train_heldout,
    verify_image_folder,
)
from haloc.errors import BadInputError
from tests.fixtures.fake_data import write_fake_cifar10, write_fake_imagefolder

# ------------------------------------------------------------------------------------------------ CIFAR-10


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root, n_train=23, n_test=7, seed=1)
    return root


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar_loads_from_folder_or_parent(cifar_root, sub):
    train, val = cifar10_datasets(cifar_root / sub if sub else cifar_root)
    assert (len(train), len(val)) == (23, 7)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    assert "cifar10" in dataset_label(train)


def test_cifar_pixels_and_labels_match_the_pickled_rows(cifar_root):
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    ds = CIFAR10Batches(cifar_root, ("test_batch",), transform=None)
    img, label = ds[3]
    row = raw[b"data"][3]  # 1024 R, then 1024 G, then 1024 B
    pixels = np.asarray(img)  # [32, 32, 3]
    assert label == raw[b"labels"][3]
    np.testing.assert_array_equal(pixels[:, :, 0].ravel(), row[:1024])
    np.testing.assert_array_equal(pixels[:, :, 2].ravel(), row[2048:])


def test_cifar_val_transform_is_deterministic_and_normalised(cifar_root):
    _, val = cifar10_datasets(cifar_root)
    a, b = val[0][0], val[0][0]
    torch.testing.assert_close(a, b)
    assert a.abs().max() < 3.5  # normalised, not 0..255


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(BadInputError, match="does not exist.*data_batch_1"):
        cifar10_datasets(tmp_path / "nope")


def test_cifar_empty_folder(tmp_path):
    with pytest.raises(BadInputError, match="is empty"):
        cifar10_datasets(tmp_path)


def test_cifar_wrong_layout(tmp_path):
    (tmp_path / "train.csv").write_text("x")
    with pytest.raises(BadInputError, match=r"wrong layout.*train\.csv.*test_batch"):
        cifar10_datasets(tmp_path)


def test_cifar_missing_batch(tmp_path):
    root = write_fake_cifar10(tmp_path, 10, 5)
    (root / "data_batch_3").unlink()
    with pytest.raises(BadInputError, match="lacks.*data_batch_3"):
        cifar10_datasets(tmp_path)


def test_cifar_corrupt_batch_names_the_file(tmp_path):
    root = write_fake_cifar10(tmp_path, 10, 5)
    data = (root / "data_batch_2").read_bytes()
    (root / "data_batch_2").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(BadInputError, match="data_batch_2.*corrupt"):
        cifar10_datasets(tmp_path)


def test_cifar_batch_with_wrong_shape(tmp_path):
    root = write_fake_cifar10(tmp_path, 10, 5)
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, f)
    with pytest.raises(BadInputError, match=r"test_batch.*\[N, 3072\]"):
        cifar10_datasets(tmp_path)


# ------------------------------------------------------------------------------------------------ ImageFolder


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_fake_imagefolder(tmp_path_factory.mktemp("imagenet"), classes=3, per_class=2, size=40, seed=2)


def test_imagefolder_loads_with_standard_transforms(imagenet_root):
    train, val = imagenet_datasets(imagenet_root)
    assert (len(train), len(val)) == (6, 6)
    assert train.classes == ["n00000000", "n00000001", "n00000002"]
    x, y = val[5]
    assert x.shape == (3, 224, 224) and y == 2
    assert train[0][0].shape == (3, 224, 224)
    assert "imagefolder" in dataset_label(train)
    assert verify_image_folder(imagenet_root) == 12
    assert verify_image_folder(imagenet_root / "train", max_files=2) == 2


def test_imagefolder_corrupt_image_detected_up_front_and_at_load(tmp_path):
    root = write_fake_imagefolder(tmp_path, classes=2, per_class=2, size=16)
    bad = root / "train" / "n00000001" / "train_0001.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadInputError, match="1 of 8 images.*train_0001.JPEG"):
        verify_image_folder(root)
    train, _ = imagenet_datasets(root)
    with pytest.raises(BadInputError, match="train_0001.JPEG.*cannot be decoded"):
        train[3]


def test_imagefolder_missing_and_empty(tmp_path):
    with pytest.raises(BadInputError, match="does not exist.*train/<class>"):
        imagenet_datasets(tmp_path / "nope")
    with pytest.raises(BadInputError, match="is empty"):
        imagenet_datasets(tmp_path)
    with pytest.raises(BadInputError, match="holds no images"):
        verify_image_folder(tmp_path)


def test_imagefolder_without_val(tmp_path):
    write_fake_imagefolder(tmp_path, classes=2, per_class=1, size=16, splits=("train",))
    with pytest.raises(BadInputError, match=r"no val/.*found \['train'\].*val/<class>"):
        check_imagefolder_layout(tmp_path)


def test_imagefolder_flat_val(tmp_path):
    write_fake_imagefolder(tmp_path, classes=2, per_class=1, size=16)
    for f in (tmp_path / "val").rglob("*.JPEG"):
        f.rename(tmp_path / "val" / f"{f.parent.name}_{f.name}")
    for d in (tmp_path / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(BadInputError, match="loose image files but no class folders"):
        imagenet_datasets(tmp_path)


def test_imagefolder_class_mismatch_and_empty_class(tmp_path):
    write_fake_imagefolder(tmp_path, classes=2, per_class=1, size=16)
    (tmp_path / "train" / "n_extra").mkdir()
    with pytest.raises(BadInputError, match=r"n_extra.*hold no images"):
        imagenet_datasets(tmp_path)
    write_fake_imagefolder(tmp_path, classes=["n_extra"], per_class=1, size=16, splits=("train",))
    with pytest.raises(BadInputError, match=r"different class folders.*only in train: \['n_extra'\]"):
        imagenet_datasets(tmp_path)


# ------------------------------------------------------------------------------------------------ demo


def test_demo_is_labelled_deterministic_and_seeded():
    a, b, c = demo_dataset(20, 4, 16, seed=3), demo_dataset(20, 4, 16, seed=3), demo_dataset(20, 4, 16, seed=4)
    assert a.name == DEMO_NAME and "not real data" in dataset_label(Subset(a, [0, 1]))
    xa, ya = a[7]
    xb, yb = b[7]
    assert xa.shape == (3, 16, 16) and ya == yb == 7 % 4
    torch.testing.assert_close(xa, xb)
    assert not torch.allclose(xa, c[7][0])
    assert [a[i][1] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_demo_splits_share_patterns_not_noise():
    train, val = (demo_dataset(40, 5, 16, seed=0, split=s) for s in ("train", "val"))
    torch.testing.assert_close(train.pattern(2), val.pattern(2))
    assert not torch.allclose(train[2][0], val[2][0])
    # Class signal is there: each sample is nearest to its own class pattern far more often than chance.
    patterns = torch.stack([val.pattern(c) for c in range(5)])  # [5, 3, H, W]
    hits = sum(int(((patterns - x) ** 2).sum((1, 2, 3)).argmin() == y) for x, y in (val[i] for i in range(40)))
    assert hits / 40 > 0.6


def test_demo_bad_arguments():
    with pytest.raises(BadInputError, match="num_classes"):
        demo_dataset(10, num_classes=1)
    with pytest.raises(BadInputError, match="image_size"):
        demo_dataset(10, image_size=2)


def test_build_datasets_dispatch(cifar_root):
    train, val = build_datasets(DataConfig(kind="demo", demo_train=30, demo_val=10, image_size=16, num_classes=3))
    assert (len(train), len(val)) == (30, 10) and train[0][0].shape == (3, 16, 16)
    assert len(build_datasets(DataConfig(kind="cifar10", root=str(cifar_root)))[0]) == 23
    cfg = DataConfig(kind="cifar10", root="/data/cifar")
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadInputError, match=r"unknown key\(s\) \['path'\]"):
        DataConfig.from_dict({"kind": "cifar10", "path": "x"})
    with pytest.raises(BadInputError, match="choose one of"):
        build_datasets(DataConfig(kind="mnist", root="x"))
    with pytest.raises(BadInputError, match="needs a root"):
        build_datasets(DataConfig(kind="imagenet"))


# ------------------------------------------------------------------------------------------------ splits, loaders


def test_split_train_heldout_is_disjoint_complete_and_seeded():
    ds = demo_dataset(50, 5, 8)
    tr, ho = split_train_heldout(ds, 0.2, seed=1)
    assert (len(tr), len(ho)) == (40, 10)
    assert sorted(tr.indices + ho.indices) == list(range(50))
    assert split_train_heldout(ds, 0.2, seed=1)[1].indices == ho.indices
    assert split_train_heldout(ds, 0.2, seed=2)[1].indices != ho.indices


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, 0.001])
def test_split_train_heldout_bad_fraction(fraction):
    with pytest.raises(BadInputError, match="heldout_fraction"):
        split_train_heldout(demo_dataset(50, 5, 8), fraction)


def _labels_order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_make_loader_order_depends_on_seed_and_epoch_only():
    ds = Subset(demo_dataset(64, 64, 8), list(range(64)))  # label == index: the order is visible
    a, b = make_loader(ds, 16, shuffle=True, seed=5), make_loader(ds, 16, shuffle=True, seed=5)
    seed_epoch(a, 5, 0)
    first = _labels_order(a)
    assert first == _labels_order(a)  # same epoch, same order
    seed_epoch(a, 5, 1)
    second = _labels_order(a)
    assert second != first and sorted(second) == list(range(64))
    seed_epoch(b, 5, 1)  # a fresh loader jumps straight to epoch 1: what a resume needs
    assert _labels_order(b) == second
    assert _labels_order(make_loader(ds, 16, shuffle=False)) == list(range(64))
    with pytest.raises(BadInputError, match="batch_size"):
        make_loader(ds, 0, shuffle=True)


# ------------------------------------------------------------------------------------------------ digits


def test_digits_split_is_stratified_fixed_by_seed_and_disjoint():
    from haloc.data import digits_datasets

    train, test = digits_datasets(seed=0)
    assert (len(train), len(test)) == (1437, 360)
    assert train[0][0].shape == (3, 32, 32) and train[0][0].dtype == torch.float32
    counts = torch.bincount(test.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 per class, +-1
    again, _ = digits_datasets(seed=0)
    torch.testing.assert_close(again.images, train.images)
    other, _ = digits_datasets(seed=1)
    assert not torch.equal(other.targets, train.targets)
    # no test image is also a training image
    flat_train = {tuple(x.flatten()[::17].tolist()) for x in train.images}
    assert sum(tuple(x.flatten()[::17].tolist()) in flat_train for x in test.images) <= 2  # duplicates in the scans


def test_distorted_digits_are_fixed_per_image_and_differ_from_the_plain_ones():
    from haloc.data import digits_datasets, distort_digits

    plain, _ = digits_datasets(seed=0)
    hard, hard_test = digits_datasets(seed=0, distortion=1.0)
    assert torch.equal(hard.targets, plain.targets) and len(hard_test) == 360  # the same split, other pixels
    assert "distortion 1" in hard.name
    again, _ = digits_datasets(seed=0, distortion=1.0)
    torch.testing.assert_close(again.images, hard.images)  # a fixed data set, not an augmentation
    # each image moved: far from its plain version, farther than the noise alone would put it
    moved = (hard.images - plain.images).flatten(1).norm(dim=1) / plain.images.flatten(1).norm(dim=1)
    assert moved.median() > 0.3
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    assert torch.equal(distort_digits(x, 0.0), x)  # strength 0: no warp, no noise
    warped = distort_digits(x, 1.0)
    assert warped.shape == x.shape and warped.min() >= 0 and warped.max() <= 1
    assert not torch.equal(warped[0], warped[1])  # a draw per image
    with pytest.raises(BadInputError, match="distortion"):
        digits_datasets(seed=0, distortion=-1.0)


def test_digits_through_build_datasets_with_and_without_augmentation():
    plain, _ = build_datasets(DataConfig(kind="digits", augment=False))
    shifted, _ = build_datasets(DataConfig(kind="digits", augment=True))
    torch.testing.assert_close(plain[5][0], plain[5][0])
    torch.manual_seed(0)
    views = [shifted[5][0] for _ in range(6)]
    assert any(not torch.equal(v, plain[5][0]) for v in views)  # shifted copies
    assert all(v.shape == (3, 32, 32) for v in views) and plain[5][1] == shifted[5][1]
    assert "digits" in dataset_label(plain)
