"""Checks of a run's inputs before anything is written and before Ray starts: a bad input found
here costs seconds and leaves nothing behind (BadInputError: the CLI's exit 2)."""
from __future__ import annotations

from pathlib import Path

from haloc.errors import BadInputError

from .run_spec import RunSpec

# Verifying every image of a real ImageNet (1.28M files) would take hours; above this many files a
# sample is decoded up front and the loaders still reject a corrupt file with its path.
VERIFY_ALL_UP_TO = 20000


def resolve_profiles(spec: RunSpec) -> dict:
    """{name: HardwareProfile} of the run's hardware, each read and validated once; the run's
    --profile-dir folders are registered first (every later lookup by name sees them)."""
    from hw_profiles.profile import get_profile, register_profile_dir

    for folder in spec.profile_dirs:
        register_profile_dir(folder)
    return {hw: get_profile(hw) for hw in spec.hardware}


def check_model(spec: RunSpec) -> None:
    """The model resolves (a registry name, torchvision:NAME, or an importable factory) and builds at the
    run's class count and input size, with at least one layer to decompose."""
    import haloc

    use_py_modules(spec.py_modules)
    if spec.model not in haloc.models.list_models() and ":" not in spec.model:
        raise BadInputError(f"model {spec.model!r} unknown; choose one of {haloc.models.list_models()}, or give "
                            "torchvision:NAME or package.module:factory")
    specs = haloc.models.layer_specs(haloc.models.ModelSpec.of(spec.model_spec))
    if not specs:
        raise BadInputError(f"model {spec.model!r} has no layer HALOC can decompose (convolutions and linear layers "
                            "without groups); nothing to compress")


def use_py_modules(folders) -> None:
    """The driver imports the user's factories from the --py-modules folders as Ray's workers will
    (Ray puts each folder's parent on their path: `import <folder name>`)."""
    import sys

    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise BadInputError(f"--py-modules {folder!r} does not exist; pass the folder of your package")
        parent = str(path.resolve().parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)


def check_weights(spec: RunSpec) -> None:
    """--weights that cannot be read or do not fit the model fail here (the weights stage would find
    it only after Ray started and the manifest was created)."""
    if not spec.weights:
        return
    import haloc

    # as the weights stage loads them (torchvision's: from the hub cache, or downloaded where a network is)
    haloc.models.create(spec.model, num_classes=spec.num_classes, weights=spec.weights)


def read_data_facts(kind: str, data: str):
    """haloc.data.DataFacts of --data (an s3:// data set is synced to the local cache first)."""
    from haloc import data as hdata
    from workers.data_cache import local_data_path

    if kind not in ("cifar10", "imagenet", "factory", "pickled"):
        raise BadInputError(f"data set {kind!r} unknown; use imagenet, cifar10, a package.module:factory or demo")
    try:
        root = local_data_path(data)
    except OSError as e:
        raise BadInputError(f"--data {data.split('?', 1)[0]!r} cannot be read ({e}); check the path, "
                            "the endpoint and the credentials") from None
    return hdata.data_facts(kind, root, shown_as=data.split("?", 1)[0])


def detect_data_kind(data: str) -> str:
    """"imagenet" for an ImageFolder tree (train/ and val/), "cifar10" for CIFAR-10 python batches."""
    from haloc import data as hdata
    from workers.data_cache import local_data_path

    try:
        root = Path(local_data_path(data))
    except OSError as e:
        raise BadInputError(f"--data {data.split('?', 1)[0]!r} cannot be read ({e}); check the path, "
                            "the endpoint and the credentials") from None
    return hdata.detect_data_kind(root, shown_as=data.split("?", 1)[0])


def check_data(spec: RunSpec, console) -> None:
    """The data set's layout and files (an s3:// data set is synced to the local cache first)."""
    if spec.is_demo:
        if spec.data:
            raise BadInputError("--data was given with the demo data set; drop --data or choose a real data set")
        return
    if not spec.data:
        raise BadInputError(f"the {spec.dataset} pipeline needs --data (a local folder or s3:// URI), "
                            "or --preset demo for generated data")
    from haloc import data as hdata
    from workers.data_cache import local_data_path

    if "://" in spec.data:
        console.print(f"syncing {spec.data.split('?', 1)[0]} to the local data cache")
    try:
        root = local_data_path(spec.data)
    except OSError as e:
        raise BadInputError(f"--data {spec.data.split('?', 1)[0]!r} cannot be read ({e}); check the path, "
                            "the endpoint and the credentials") from None
    if spec.dataset == "cifar10":
        hdata.cifar10_datasets(root)  # reads every batch: a corrupt one raises naming the file
    elif spec.dataset == "imagenet":
        hdata.check_imagefolder_layout(root)
        for split in ("train", "val"):
            hdata.verify_image_folder(Path(root) / split, max_files=VERIFY_ALL_UP_TO)
    elif spec.dataset in ("factory", "pickled"):
        hdata.data_facts(spec.dataset, root)  # builds both splits, checks one sample
    else:
        raise BadInputError(f"data set {spec.dataset!r} unknown; use imagenet, cifar10 or demo")


def check_luts_from(store, spec: RunSpec, profiles: dict) -> None:
    """--luts-from RUN: that run exists in the store, has the same model, input size and LUT
    protocol, and measured the named hardware with the same profiles; else BadInputError naming
    the difference."""
    from .manifest import RunManifest
    from .store import validate_run_id

    validate_run_id(spec.luts_from)
    if spec.luts_from == spec.run_id:
        raise BadInputError(f"--luts-from {spec.luts_from!r} names this run itself; name another run of the store")
    manifest = RunManifest.read(store, spec.luts_from)
    other = (manifest or {}).get("spec")
    if other is None:
        raise BadInputError(f"--luts-from {spec.luts_from!r}: no such run in {store.uri}; name a run of this store "
                            "(its folder holds manifest.json)")
    for key in ("model", "image_size", "profile_batch", "rank_step"):
        if other.get(key) != getattr(spec, key):
            raise BadInputError(f"--luts-from {spec.luts_from!r}: that run has {key}={other.get(key)!r}, this one "
                                f"{getattr(spec, key)!r}; its LUTs do not fit. Use a run with the same {key}")
    stored = manifest.get("stages", {}).get("profile", {}).get("info", {}).get("profiles")
    for hw, profile in profiles.items():
        if stored and hw in stored and stored[hw] != profile.to_dict():
            diff = sorted(k for k in set(stored[hw]) | set(profile.to_dict())
                          if stored[hw].get(k) != profile.to_dict().get(k))
            raise BadInputError(f"--luts-from {spec.luts_from!r}: hardware profile {hw!r} differs from the one that "
                                f"measured its LUT (keys {diff}); profile {hw!r} again in this run instead")
