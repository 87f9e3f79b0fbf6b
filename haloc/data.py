"""Data sets for fine-tuning and search: CIFAR-10 (python batches), ImageNet (ImageFolder), scikit-learn's
real handwritten digits (bundled with scikit-learn, upsampled to 32x32x3), a generated demo.

Every builder returns `(train, val)` torch Datasets yielding `(image [3, H, W] float, label int)`.
The search trains weights on one part of the training data and architecture logits on a held-out
part of it (`split_train_heldout`); validation data is never used for either.

Bad input (missing or empty folders, the wrong layout, corrupt batches or images) raises
`BadInputError` naming the path and the fix. (The tests write small data in the real file formats
with `tests/fixtures/fake_data.py`, so the real loading paths run.)
"""
from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .config import from_dict_strict
from .errors import BadInputError, param

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_SUBDIR = "cifar-10-batches-py"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEMO_NAME = "demo (generated, not real data)"
KINDS = ("cifar10", "imagenet", "digits", "demo", "factory", "pickled")
PICKLED_FILE = "datasets.pkl"  # a (train, val) pair that pipelines.api.compress wrote for every node to load
# Unpickling runs code, so pickled datasets are loaded only where the data is named so, explicitly
# ("pickled:<folder>"), never because a folder happens to hold a datasets.pkl.
PICKLED_PREFIX = "pickled:"
DIGITS_TEST_SIZE = 360  # of 1,797 images: the 1437/360 split of ENVIRONMENT.md
DIGITS_MAX_DISTORTION = 2.0  # `distort_digits` strengths beyond it warp digits past recognition


@dataclass(frozen=True)
class DataConfig:
    """Which data set to build and how; `root` is unused for the demo and the digits."""

    kind: str = "demo"  # one of KINDS
    root: str | None = None  # CIFAR-10 batch folder, ImageNet folder with train/ and val/, or package.module:factory
    augment: bool = True  # standard training augmentations (off: the val transform on train too)
    image_size: int = 32  # demo images, and the crop of an ImageFolder (CIFAR-10 is 32x32)
    num_classes: int = 10  # demo only
    demo_train: int = 2000  # demo: training samples
    demo_val: int = 500  # demo: validation samples
    demo_noise: float = 0.8  # demo: std of the noise added to the unit-amplitude class pattern
    seed: int = 0  # demo: patterns and noise; digits: the stratified train/test split

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataConfig:
        return from_dict_strict(cls, data, "data config")


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """(train, val) for `cfg.kind`."""
    if cfg.kind == "demo":
        common = dict(num_classes=cfg.num_classes, image_size=cfg.image_size, seed=cfg.seed, noise=cfg.demo_noise)
        return demo_dataset(cfg.demo_train, split="train", **common), demo_dataset(cfg.demo_val, split="val", **common)
    if cfg.kind == "digits":
        return digits_datasets(seed=cfg.seed, augment=cfg.augment, image_size=cfg.image_size)
    if cfg.kind not in KINDS:
        raise BadInputError(f"data kind {cfg.kind!r} is unknown; choose one of {list(KINDS)}")
    if not cfg.root:
        raise BadInputError(f"data kind {cfg.kind!r} needs a root folder; pass the data set's local path")
    if cfg.kind == "cifar10":
        return cifar10_datasets(cfg.root, augment=cfg.augment)
    if cfg.kind == "factory":
        return factory_datasets(cfg.root)
    if cfg.kind == "pickled":
        return pickled_datasets(cfg.root)
    return imagenet_datasets(cfg.root, augment=cfg.augment, image_size=cfg.image_size)


def is_factory_path(data: str | None) -> bool:
    """`package.module:factory` (not a URI, not a Windows drive, not an existing file)."""
    if not data or "://" in data or ":" not in data or Path(data).exists():
        return False
    module, _, attr = data.partition(":")
    return bool(module) and attr.isidentifier() and all(p.isidentifier() for p in module.split("."))


def factory_datasets(path: str) -> tuple[Dataset, Dataset]:
    """(train, val) from the user's `package.module:factory`, called with no arguments. Its datasets are
    used as they are: their transforms are the user's (each sample an image tensor (C, H, W) and a label)."""
    import importlib

    module, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BadInputError(f"{param('data', repr(path))}: module {module!r} cannot be imported ({e}); install it, put "
                            f"its folder on PYTHONPATH, or pass {param('py_modules', 'FOLDER')} so that every node "
                            "of the run gets it") from e
    except AttributeError:
        raise BadInputError(f"{param('data', repr(path))}: module {module!r} has no {attr!r}; name a callable "
                            "that returns (train, val) datasets") from None
    out = fn()
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(hasattr(d, "__len__") and hasattr(d, "__getitem__")
                                                                     for d in out)):
        raise BadInputError(f"{param('data', repr(path))} returned {type(out).__name__}; the factory must return "
                            "(train, val): two torch Datasets")
    train, val = out
    if len(train) == 0 or len(val) == 0:
        raise BadInputError(f"{param('data', repr(path))}: the training or validation set is empty "
                            f"({len(train)} / {len(val)})")
    return train, val


def pickled_datasets(folder: str) -> tuple[Dataset, Dataset]:
    """(train, val) from `folder`/datasets.pkl, as pipelines.api.compress wrote them (cloudpickle, so
    transforms defined in the user's script come along). Unpickling runs code: only load your own."""
    folder = folder[len(PICKLED_PREFIX):] if folder.startswith(PICKLED_PREFIX) else folder
    path = Path(folder) / PICKLED_FILE
    if not path.is_file():
        raise BadInputError(f"{param('data', repr(folder))} has no {PICKLED_FILE}; pass the folder "
                            "pipelines.api.compress wrote, or another kind of data")
    with open(path, "rb") as f:
        try:
            out = pickle.load(f)
        except Exception as e:  # the classes of the user's datasets must be importable here too
            raise BadInputError(f"{str(path)!r} cannot be unpickled on this node ({type(e).__name__}: {e}); the "
                                "datasets' classes must be importable on every node (pass "
                                f"{param('py_modules', 'FOLDER')})") from e
    if not (isinstance(out, tuple) and len(out) == 2):
        raise BadInputError(f"{str(path)!r} does not hold a (train, val) pair")
    return out


def _factory_facts(path: str, kind: str = "factory") -> DataFacts:
    train, val = factory_datasets(path) if kind == "factory" else pickled_datasets(path)
    x, y = train[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise BadInputError(f"{param('data', repr(path))}: a sample's image is a {type(x).__name__}"
                            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}, not a (C, H, W) tensor; add a "
                            "ToTensor() to the dataset's transform")
    classes = getattr(train, "classes", None)
    count = len(classes) if classes is not None else getattr(train, "num_classes", None)
    side = int(x.shape[-1]) if x.shape[-1] == x.shape[-2] else None
    text = f"{count} classes" if count else "class count not given by the data"
    origin = f"datasets from {path}" if kind == "factory" else "datasets given to pipelines.api.compress"
    return DataFacts(int(count) if count else 0, side,
                     f"{origin} ({len(train)} train / {len(val)} val samples, {text})")


@dataclass(frozen=True)
class DataFacts:
    """What a data set says about itself: the class count and the side of its images."""

    num_classes: int
    image_side: int | None  # None: images of many sizes (crop them to the model's input)
    description: str  # "CIFAR-10 batches at /data/cifar", "ImageFolder at /data/birds (200 classes)"


def data_facts(kind: str, root: str | Path, shown_as: str | None = None) -> DataFacts:
    """DataFacts of a CIFAR-10 batch folder or an ImageFolder tree (its layout checked on the way);
    `shown_as` is how the description names the data (its URI, say; default: the folder)."""
    shown = shown_as or str(root)
    if kind == "cifar10":
        names = _read_cifar_meta(_cifar_dir(Path(root)))
        return DataFacts(len(names), 32, f"CIFAR-10-format batches at {shown} ({len(names)} classes)")
    if kind == "imagenet":
        from PIL import Image

        classes = check_imagefolder_layout(root)
        train = Path(root) / "train"
        sizes = set()
        for name in classes[:8]:  # a sample: a few classes, a few images each
            for path in _image_files(train / name)[:4]:
                try:
                    with Image.open(path) as img:
                        sizes.add(min(img.size))
                except Exception as e:  # PIL raises several types for a file that is no image
                    raise BadInputError(f"image {str(path)!r} cannot be decoded ({type(e).__name__}); replace or "
                                        "delete it") from None
        side = sizes.pop() if len(sizes) == 1 else None
        return DataFacts(len(classes), side, f"ImageFolder at {shown} ({len(classes)} classes)")
    if kind in ("factory", "pickled"):
        return _factory_facts(str(root), kind)
    raise BadInputError(f"data kind {kind!r} has no facts to read; use cifar10, imagenet or factory")


def dataset_label(ds: Dataset) -> str:
    """Human-readable name of a data set for reports, looking through Subsets."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    name = getattr(ds, "name", None)
    if name:
        return str(name)
    root = getattr(ds, "root", None)
    return f"{type(ds).__name__}({root})" if root else type(ds).__name__


# ---------------------------------------------------------------------------------------------- CIFAR-10


def _cifar_transforms(augment: bool):
    from torchvision import transforms as T

    normalise = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose(train + normalise), T.Compose(normalise)


class CIFAR10Batches(Dataset):
    """Images of CIFAR-10 python batch files held in memory as uint8 [N, 32, 32, 3]."""

    def __init__(self, root: str | Path, files: tuple[str, ...], transform=None, name: str = "cifar10"):
        self.root = _cifar_dir(Path(root))
        arrays, labels = [], []
        for f in files:
            x, y = _read_cifar_batch(self.root / f)
            arrays.append(x)
            labels.extend(y)
        self.images = np.concatenate(arrays)  # [N, 32, 32, 3] uint8
        self.targets = labels
        self.classes = _read_cifar_meta(self.root)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


def cifar10_datasets(root: str | Path, augment: bool = True) -> tuple[Dataset, Dataset]:
    """(train: data_batch_1..5, val: test_batch) from the python-format folder (or its parent)."""
    train_tf, val_tf = _cifar_transforms(augment)
    train = CIFAR10Batches(root, CIFAR10_TRAIN_FILES, train_tf, name="cifar10 train")
    val = CIFAR10Batches(root, (CIFAR10_TEST_FILE,), val_tf, name="cifar10 test")
    return train, val


_CIFAR_LAYOUT = (f"a folder with {', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE} and {CIFAR10_META_FILE} "
                 f"(the python version of CIFAR-10, possibly inside {CIFAR10_SUBDIR}/)")


def _cifar_dir(root: Path) -> Path:
    if not root.exists():
        raise BadInputError(f"CIFAR-10 folder {str(root)!r} does not exist; pass {_CIFAR_LAYOUT}")
    if not root.is_dir():
        raise BadInputError(f"CIFAR-10 path {str(root)!r} is not a folder; pass {_CIFAR_LAYOUT}")
    for candidate in (root, root / CIFAR10_SUBDIR):
        if (candidate / CIFAR10_TEST_FILE).is_file():
            missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_META_FILE) if not (candidate / f).is_file()]
            if missing:
                raise BadInputError(f"CIFAR-10 folder {str(candidate)!r} lacks {missing}; expected {_CIFAR_LAYOUT}")
            return candidate
    if not any(root.iterdir()):
        raise BadInputError(f"CIFAR-10 folder {str(root)!r} is empty; expected {_CIFAR_LAYOUT}")
    found = sorted(p.name for p in root.iterdir())[:8]
    raise BadInputError(f"CIFAR-10 folder {str(root)!r} has the wrong layout (found {found}); expected {_CIFAR_LAYOUT}")


# The only globals a CIFAR-10 batch needs: numpy arrays (numpy 1 and 2 module paths) and the bytes
# helper of protocol-2 pickles written by Python 3. Anything else (os.system, ...) is refused.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a data file must never run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # The real files are Python 2 pickles of dicts with bytes keys; encoding="bytes" reads both.
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # truncated or foreign files raise several types
        raise BadInputError(f"CIFAR-10 batch {str(path)!r} is corrupt ({type(e).__name__}: {e}); "
                            "re-extract cifar-10-python.tar.gz") from e
    if not isinstance(obj, dict):
        raise BadInputError(f"CIFAR-10 batch {str(path)!r} holds a {type(obj).__name__}, not a dict; "
                            "re-extract cifar-10-python.tar.gz")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    batch = _unpickle(path)
    fix = "re-extract cifar-10-python.tar.gz"
    if "data" not in batch or "labels" not in batch:
        raise BadInputError(f"CIFAR-10 batch {str(path)!r} lacks 'data'/'labels' (keys {sorted(batch)}); {fix}")
    try:
        data = np.asarray(batch["data"])
        labels = [int(y) for y in batch["labels"]]
    except (TypeError, ValueError) as e:
        raise BadInputError(f"CIFAR-10 batch {str(path)!r} has unreadable data or labels ({e}); {fix}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise BadInputError(f"CIFAR-10 batch {str(path)!r}: data must be uint8 [N, 3072] with N labels, got "
                            f"{data.dtype} {list(data.shape)} and {len(labels)} labels; {fix}")
    if labels and not all(0 <= y < 10 for y in labels):
        raise BadInputError(f"CIFAR-10 batch {str(path)!r}: labels must lie in 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # rows are R,G,B planes -> [N, 32, 32, 3]


def _read_cifar_meta(root: Path) -> list[str]:
    meta = _unpickle(root / CIFAR10_META_FILE)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise BadInputError(f"CIFAR-10 meta {str(root / CIFAR10_META_FILE)!r} lacks 10 'label_names'; "
                            "re-extract cifar-10-python.tar.gz")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# ---------------------------------------------------------------------------------------------- digits


class DigitsDataset(Dataset):
    """scikit-learn's 8x8 handwritten digits (real scans, 10 classes) as normalised [3, S, S] tensors.

    Upsampled bilinearly once at construction (S = 32 by default, the CIFAR models' input) and
    repeated over 3 channels. `augment`: a random shift of up to 2 pixels per access (blank fill).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str, augment: bool = False):
        self.images, self.targets = images, labels  # [N, 3, S, S] float, [N] int64
        self.name, self.augment = name, augment
        self.background = float(images.amin()) if len(images) else 0.0  # a blank pixel, normalised
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]  # [3, S, S]
        if self.augment:
            s = x.shape[-1]
            dy, dx = torch.randint(0, 5, (2,)).tolist()
            padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=self.background)  # [3, S+4, S+4]
            x = padded[:, dy:dy + s, dx:dx + s]
        return x, int(self.targets[i])


def digits_datasets(seed: int = 0, augment: bool = False, image_size: int = 32,
                    test_size: int = DIGITS_TEST_SIZE, distortion: float = 0.0) -> tuple[Dataset, Dataset]:
    """(train, test) of scikit-learn's bundled digits: 1,797 real images, split stratified by `seed`.

    No download: the images ship inside scikit-learn (`pip install scikit-learn`, in the test extras).
    Pixels are normalised with the training split's mean and std. `distortion` > 0 makes the task
    harder (`distort_digits`): the digits alone are too easy to tell rank choices apart.
    """
    if not 0 <= distortion <= DIGITS_MAX_DISTORTION:
        raise BadInputError(f"digits distortion {distortion:g}: give a strength from 0 (none) to "
                            f"{DIGITS_MAX_DISTORTION:g}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise BadInputError("data kind 'digits' needs scikit-learn; pip install scikit-learn "
                            "(or pip install -e '.[test]')") from e
    import torch.nn.functional as F

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1).contiguous()  # [N, 3, S, S]
    if distortion:
        images = distort_digits(images, distortion)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)  # [N]
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed,
                                           stratify=digits.target)
    train_idx, test_idx = torch.as_tensor(np.sort(train_idx)), torch.as_tensor(np.sort(test_idx))
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    kind = f"digits, distortion {distortion:g}" if distortion else "digits"
    return (DigitsDataset(images[train_idx], labels[train_idx], f"{kind} train (scikit-learn, seed {seed})", augment),
            DigitsDataset(images[test_idx], labels[test_idx], f"{kind} test (scikit-learn, seed {seed})"))


def distort_digits(images: torch.Tensor, strength: float) -> torch.Tensor:
    """A fixed random affine warp and pixel noise per image ([N, C, S, S] in [0, 1], blank = 0).

    At strength 1: rotation up to 30 degrees, scale 0.75-1.1, shear up to 0.3, shift up to 12% of
    the image, Gaussian noise of std 0.2. The draw depends on the image's index alone (generator
    seeded 0), so every split and every run sees the same distorted image.
    """
    import math

    import torch.nn.functional as F

    n = len(images)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, 6, generator=g) * 2 - 1  # [N, 6] in [-1, 1]
    angle = u[:, 0] * math.radians(30) * strength
    scale = 1 + strength * (0.175 * u[:, 1] - 0.075)  # 0.75-1.1 at strength 1
    shear, shift = u[:, 2] * 0.3 * strength, u[:, 3:5] * 0.24 * strength  # shift: grid units (2 = width)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # [N, 2, 3], output -> input coords
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    noise = torch.randn(warped.shape[0], 1, *warped.shape[2:], generator=g) * 0.2 * strength
    return (warped + noise).clamp(0, 1)  # the same noise on the 3 (repeated) channels


# ---------------------------------------------------------------------------------------------- ImageNet


_IMAGENET_LAYOUT = ("a folder with train/<class>/<image> and val/<class>/<image> (ImageFolder layout, the same "
                    "class folders in both, e.g. train/n01440764/x.JPEG)")


def _imagenet_transforms(augment: bool, image_size: int = 224):
    """ImageNet's transforms at any crop size: resize to 8/7 of it (256 for 224), crop the centre."""
    from torchvision import transforms as T

    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    val = T.Compose([T.Resize(round(image_size * 8 / 7)), T.CenterCrop(image_size), *normalise])
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *normalise]) if augment else val
    return train, val


def _checked_image_loader(path: str):
    """torchvision's PIL loader, with a corrupt file reported by path (a DataLoader would bury it)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:
        raise BadInputError(f"image {path!r} cannot be decoded ({type(e).__name__}: {e}); "
                            "replace or delete the file (verify_image_folder lists every bad file)") from e


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def detect_data_kind(root: str | Path, shown_as: str | None = None) -> str:
    """"imagenet" for an ImageFolder tree (train/ and val/), "cifar10" for CIFAR-10 python batches (a
    missing batch is named); anything else is BadInputError naming `shown_as` (default the path)."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return "imagenet"
    if root.is_dir() and any((c / CIFAR10_TEST_FILE).is_file() for c in (root, root / CIFAR10_SUBDIR)):
        _cifar_dir(root)
        return "cifar10"
    raise BadInputError(f"{param('data', repr(shown_as or str(root)))} is neither an ImageFolder tree (train/ "
                        "and val/ with a folder per class) nor CIFAR-10 python batches (data_batch_1..5, test_batch, "
                        "batches.meta); give one of those, or package.module:factory")


def check_imagefolder_layout(root: str | Path) -> list[str]:
    """The class names of an ImageNet-style folder; BadInputError naming the path if the layout is wrong."""
    root = Path(root)
    if not root.exists():
        raise BadInputError(f"image folder {str(root)!r} does not exist; pass {_IMAGENET_LAYOUT}")
    if not root.is_dir():
        raise BadInputError(f"image path {str(root)!r} is not a folder; pass {_IMAGENET_LAYOUT}")
    if not any(root.iterdir()):
        raise BadInputError(f"image folder {str(root)!r} is empty; expected {_IMAGENET_LAYOUT}")
    classes = None
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            found = sorted(p.name for p in root.iterdir())[:8]
            raise BadInputError(f"image folder {str(root)!r} has no {split}/ (found {found}); "
                                f"expected {_IMAGENET_LAYOUT}")
        names = _class_dirs(d)
        if not names:
            loose = "loose image files but no class folders" if _image_files(d) else "no class folders"
            raise BadInputError(f"{str(d)!r} has {loose}; expected {_IMAGENET_LAYOUT} (for the flat ImageNet val "
                                "set, move each image into its class folder using the devkit's ground truth)")
        empty = [n for n in names if not _image_files(d / n)]
        if empty:
            raise BadInputError(f"class folders {empty[:5]} under {str(d)!r} hold no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folders")
        if classes is None:
            classes = names
        elif names != classes:
            only_train, only_val = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
            raise BadInputError(f"train/ and val/ under {str(root)!r} have different class folders "
                                f"(only in train: {only_train[:5]}, only in val: {only_val[:5]}); "
                                "both must hold the same classes: move or rename the class folders")
    return classes


def imagenet_datasets(root: str | Path, augment: bool = True, image_size: int = 224) -> tuple[Dataset, Dataset]:
    """(train, val) ImageFolders with the standard ImageNet transforms at `image_size`; layout checked first."""
    from torchvision.datasets import ImageFolder

    check_imagefolder_layout(root)
    train_tf, val_tf = _imagenet_transforms(augment, image_size)
    root = Path(root)
    train = ImageFolder(str(root / "train"), transform=train_tf, loader=_checked_image_loader)
    val = ImageFolder(str(root / "val"), transform=val_tf, loader=_checked_image_loader)
    train.name, val.name = f"imagefolder train ({root})", f"imagefolder val ({root})"
    return train, val


def verify_image_folder(path: str | Path, max_files: int | None = None) -> int:
    """Decode every image under `path` (up to `max_files`) with PIL; returns the count checked.

    Raises BadInputError listing the corrupt files, so a run fails up front instead of mid-epoch.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise BadInputError(f"image folder {str(path)!r} does not exist; pass {_IMAGENET_LAYOUT}")
    files = _image_files(path)
    if not files:
        raise BadInputError(f"image folder {str(path)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            f"expected {_IMAGENET_LAYOUT}")
    files = files[:max_files] if max_files is not None else files
    bad = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.convert("RGB")  # a full decode: verify() alone misses truncated pixel data
        except Exception as e:
            bad.append(f"{f} ({type(e).__name__})")
    if bad:
        raise BadInputError(f"{len(bad)} of {len(files)} images under {str(path)!r} cannot be decoded: "
                            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}; replace or delete them")
    return len(files)


# ---------------------------------------------------------------------------------------------- demo


class DemoDataset(Dataset):
    """Generated images: each class is a fixed mix of oriented sinusoid gratings, plus noise per sample.

    Sample i is computed on access from (seed, split, i), so any size costs no memory and is the same
    in every process. Labels cycle through the classes (balanced). Not real data: `name` says so.
    """

    name = DEMO_NAME

    def __init__(self, num_samples: int, num_classes: int = 10, image_size: int = 32, seed: int = 0,
                 noise: float = 0.8, split: str = "train", components: int = 3):
        for what, v, lo in (("num_samples", num_samples, 1), ("num_classes", num_classes, 2),
                            ("image_size", image_size, 8)):
            if not isinstance(v, int) or v < lo:
                raise BadInputError(f"demo dataset: {what}={v!r} must be an int >= {lo}")
        self.num_samples, self.num_classes, self.image_size = num_samples, num_classes, image_size
        self.seed, self.noise, self.split = seed, float(noise), split
        self.classes = [f"pattern_{c}" for c in range(num_classes)]
        g = torch.Generator().manual_seed(seed)
        # Per class and component: spatial frequency (cycles per image), orientation, phase, RGB weights.
        self._freq = 1.0 + 3.0 * torch.rand(num_classes, components, generator=g)  # [C, K]
        self._angle = math.pi * torch.rand(num_classes, components, generator=g)  # [C, K]
        self._phase = 2 * math.pi * torch.rand(num_classes, components, generator=g)  # [C, K]
        self._rgb = torch.randn(num_classes, components, 3, generator=g)  # [C, K, 3]
        self._rgb /= self._rgb.norm(dim=(1, 2), keepdim=True) / math.sqrt(3)  # unit mean power per class
        self._split_offset = {"train": 0, "heldout": 1, "val": 2}.get(split, 3) * 1_000_003
        coords = torch.arange(image_size, dtype=torch.float32) / image_size
        self._yy, self._xx = torch.meshgrid(coords, coords, indexing="ij")  # [H, W] each

    def __len__(self) -> int:
        return self.num_samples

    def pattern(self, c: int, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
        """The noise-free image of class `c`, translated by `shift` (fractions of the image)."""
        direction_x, direction_y = torch.cos(self._angle[c]), torch.sin(self._angle[c])  # [K]
        x, y = self._xx + shift[0], self._yy + shift[1]  # [H, W]
        arg = 2 * math.pi * self._freq[c, :, None, None] * (direction_x[:, None, None] * x
                                                             + direction_y[:, None, None] * y)  # [K, H, W]
        waves = torch.sin(arg + self._phase[c, :, None, None])  # [K, H, W]
        return torch.einsum("kc,khw->chw", self._rgb[c], waves)  # [3, H, W]

    def __getitem__(self, i: int):
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 7_919 + self._split_offset + i)
        label = i % self.num_classes
        shift = (torch.rand(2, generator=g) - 0.5) * 0.1  # small random translation
        noise = self.noise * torch.randn(3, self.image_size, self.image_size, generator=g)
        return self.pattern(label, (float(shift[0]), float(shift[1]))) + noise, label


def demo_dataset(num_samples: int = 1000, num_classes: int = 10, image_size: int = 32, seed: int = 0,
                 noise: float = 0.8, split: str = "train") -> DemoDataset:
    """A learnable generated data set (see DemoDataset); splits share the class patterns, not the noise."""
    return DemoDataset(num_samples, num_classes, image_size, seed, noise, split)


# ---------------------------------------------------------------------------------------------- splits, loaders


def split_train_heldout(dataset: Dataset, heldout_fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """Disjoint (train, heldout) random subsets of a TRAINING set: weights on one, architecture logits on the other."""
    if not isinstance(heldout_fraction, (int, float)) or not 0 < heldout_fraction < 1:
        raise BadInputError(f"heldout_fraction={heldout_fraction!r} must lie strictly between 0 and 1 (e.g. 0.2)")
    n = len(dataset)
    n_heldout = int(round(n * heldout_fraction))
    if n_heldout < 1 or n_heldout >= n:
        raise BadInputError(f"heldout_fraction={heldout_fraction} of {n} samples leaves an empty split; "
                            "use more data or a fraction nearer 0.5")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[n_heldout:])), Subset(dataset, sorted(order[:n_heldout]))


class EpochSampler(Sampler[int]):
    """A random permutation per epoch that depends only on (seed, epoch): resumable at any epoch.

    Call `set_epoch(e)` before each epoch (as with DistributedSampler); `finetune` does.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order and worker seeds follow from `seed` (and the epoch set by `seed_epoch`)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size={batch_size!r} must be a positive int")
    if len(dataset) == 0:
        raise BadInputError(f"data set {dataset_label(dataset)!r} is empty; check its folder")
    sampler = EpochSampler(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make epoch `epoch` reproducible on its own: sample order, worker seeds and the global RNG (augmentations)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)  # DataLoader draws worker base seeds from it
    torch.manual_seed(seed * 100_003 + epoch)  # main-process transforms and dropout
