"""Hardware profiles: one YAML file each, validated on load, looked up by name.

A profile says where a layer is measured (the Ray resource that pins the profiler actor), how
(backend `torch` on `cpu`/`cuda`, or the `zigzag` ASIC simulator) and with which protocol (batch,
dtype, threads, warm-ups, repeats, rank grid step). Users add a profile by adding a file, either to
`hw_profiles/profiles/` or to a folder passed as `extra_dirs`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from haloc.errors import BadInputError

PROFILES_DIR = Path(__file__).parent / "profiles"

BACKENDS = ("torch", "zigzag", "onnxruntime")
# The version of the measuring code a LUT row was taken with: bumped when a change to the timing loop,
# its noise correction or the simulator's pipeline makes old rows incomparable with new ones (they are
# then measured again). 3: rows record their protocol (earlier rows have none and are measured again).
TIMING_PROTOCOL_VERSION = 3
# search_margin: the least margin on timed hardware, and the noise of one whole-model measurement
# (its p10-p90 spread on a quiet node is about 1-2%) added to the calibration's worst under-prediction
MIN_TIMED_MARGIN = 0.03
TIMING_NOISE = 0.01
# What each backend fixes beyond the profile's fields (hw_profiles.timing, .ort_backend, .zigzag_backend).
BACKEND_OPTIONS = {"torch": "inference_mode; torch.utils.benchmark blocked timer",
                   "onnxruntime": "CPU provider; inter_op 1; sequential; graph opt all; no spinning",
                   "zigzag": "lean stage pipeline"}
DEVICES = ("cpu", "cuda")
TORCH_DTYPES = ("float32", "float16", "bfloat16")
ZIGZAG_DTYPES = ("int8",)  # a label only: the operand precision lives in the accelerator model


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    backend: str  # "torch", "onnxruntime" (ONNX Runtime's CPU provider) or "zigzag"
    ray_resource: str  # custom Ray resource a node offers to host this profile's actors, e.g. "hw_cpu"
    device: str = "cpu"  # torch device kind; "cpu" for zigzag (the simulator runs on the CPU)
    batch_size: int = 1
    dtype: str = "float32"
    threads: int | None = None  # torch CPU threads while timing; None keeps torch's default
    warmup: int = 5  # untimed runs before timing (at least 5 on a CPU: the first runs are slow)
    repeats: int = 30  # timed blocks at least; median, p10 and p90 are taken over them
    min_run_time_s: float = 0.1  # and at least this much timing per measurement
    rank_step: int = 8  # profiling grid: multiples of it, plus 1 and the layer's max rank
    # noise handling of timed hardware (simulators are exact): a row whose spread (p90 - p10) /
    # median exceeds max_spread, or measured while the reference workload ran more than
    # max_slowdown times slower than its fastest, is measured again interleaved with the reference
    # (at most max_remeasure times) and corrected for the machine's speed, or refused.
    max_spread: float = 0.25
    max_slowdown: float = 1.3
    max_remeasure: int = 1
    # calibration gate: the share of held-out configurations whose calibrated LUT prediction lies
    # within calibration_tolerance of the measurement must reach it (None: 0.9 for timed hardware, 1.0
    # for simulators); below it, the rows behind the errors are measured again, at most gate_rounds times.
    calibration_gate: float | None = None
    calibration_tolerance: float = 0.10
    gate_rounds: int = 2
    # the search aims this fraction below a latency budget, so that a model the LUT prices just under
    # it still meets it when measured (None: 0 for simulators; for timed hardware the larger of twice
    # the calibrated LUT's median error on held-out models and its worst held-out under-prediction plus
    # one point of timing noise, kept within [0.03, 0.10]; 0.05 before a calibration)
    budget_margin: float | None = None
    accelerator: str | None = None  # zigzag only: ZigZag accelerator name, e.g. "tpu_like"
    clock_hz: float | None = None  # zigzag only: cycles -> seconds
    description: str = ""

    @property
    def is_simulator(self) -> bool:
        """Simulated hardware has no timing noise: several actors may share one node."""
        return self.backend == "zigzag"

    @property
    def gate(self) -> float:
        """The calibration gate in force (the profile's, or the default of its kind)."""
        if self.calibration_gate is not None:
            return self.calibration_gate
        return 1.0 if self.is_simulator else 0.9

    def search_margin(self, median_rel_error: float | None = None, worst_under: float = 0.0) -> float:
        """The fraction below a latency budget the search aims at (see `budget_margin`). A miss comes
        from the LUT pricing a model below what it measures, so the one-sided error counts on its own:
        `worst_under` is the calibration's largest held-out under-prediction (Calibration.worst_under).
        Measured on the demo (2026-12-07, 1-thread cpu protocol): a margin of twice a ~1% median error
        aimed at 0.588 and measured 0.606-0.620 of the original, three attempts of three over a 0.6
        budget; hence the floor of 0.03 and the one-sided term."""
        if self.budget_margin is not None:
            return self.budget_margin
        if self.is_simulator:
            return 0.0
        if median_rel_error is None:
            return 0.05
        return min(0.10, max(MIN_TIMED_MARGIN, 2 * median_rel_error, worst_under + TIMING_NOISE))

    def protocol(self) -> dict:
        """How this profile takes a LUT row: two rows are comparable only under equal protocols. The
        batch and dtype are in each row's signature; the noise limits (max_spread, the gate) decide
        which rows are kept, not how they are timed, so they are not part of it."""
        keys = ("backend", "device", "dtype", "threads", "warmup", "repeats", "min_run_time_s", "accelerator",
                "clock_hz")
        return {"version": TIMING_PROTOCOL_VERSION, **{k: getattr(self, k) for k in keys},
                "options": BACKEND_OPTIONS[self.backend]}

    @property
    def protocol_key(self) -> str:
        """`protocol()` as canonical JSON: the value of a LUT row's `protocol` column."""
        return json.dumps(self.protocol(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = {f.name: f for f in fields(HardwareProfile)}
_REQUIRED = ("name", "backend", "ray_resource")


def _bad(source: str, key: str, value, allowed: str) -> BadInputError:
    return BadInputError(f"hardware profile {source}: key {key!r} has value {value!r}; allowed: {allowed}. "
                         f"Fix the file (see hw_profiles/profiles/cpu.yaml for an example).")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def profile_from_dict(data, source: str = "<dict>") -> HardwareProfile:
    """Validate a mapping read from YAML; every problem names `source`, the key and the allowed values."""
    if not isinstance(data, dict):
        raise BadInputError(f"hardware profile {source}: expected a mapping of keys to values, got "
                            f"{type(data).__name__}; fix the file (see hw_profiles/profiles/cpu.yaml)")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _bad(source, unknown[0], data[unknown[0]], f"known keys are {sorted(_FIELDS)}")
    for key in _REQUIRED:
        if key not in data:
            raise _bad(source, key, None, "a non-empty string (the key is required)")
    for key in ("name", "ray_resource"):
        if not isinstance(data[key], str) or not data[key] or not data[key].replace("_", "").replace("-", "").isalnum():
            raise _bad(source, key, data[key], "a non-empty string of letters, digits, '_' or '-'")
    backend = data["backend"]
    if backend not in BACKENDS:
        raise _bad(source, "backend", backend, f"one of {list(BACKENDS)}")
    device = data.get("device", "cpu")
    if device not in DEVICES or (backend in ("zigzag", "onnxruntime") and device != "cpu"):
        raise _bad(source, "device", device,
                   f"'cpu' for {backend}" if backend != "torch" else f"one of {list(DEVICES)}")
    dtypes = {"torch": TORCH_DTYPES, "onnxruntime": ("float32",)}.get(backend, ZIGZAG_DTYPES)
    dtype = data.get("dtype", dtypes[0])
    if dtype not in dtypes:
        raise _bad(source, "dtype", dtype, f"one of {list(dtypes)} for backend {backend!r}")
    for key, low in (("batch_size", 1), ("warmup", 0), ("repeats", 1), ("rank_step", 1), ("max_remeasure", 0),
                     ("gate_rounds", 0)):
        if key in data and (not _is_int(data[key]) or data[key] < low):
            raise _bad(source, key, data[key], f"an integer >= {low}")
    for key, low, high in (("min_run_time_s", 0.0, 60.0), ("max_spread", 0.0, 10.0), ("max_slowdown", 1.0, 100.0),
                           ("calibration_gate", 0.0, 1.0), ("calibration_tolerance", 0.0001, 1.0),
                           ("budget_margin", 0.0, 0.5)):
        value = data.get(key)
        if value is None and key in ("calibration_gate", "budget_margin"):
            continue
        if key in data and (not isinstance(value, (int, float)) or isinstance(value, bool)
                            or not low <= value <= high):
            raise _bad(source, key, value, f"a number in [{low}, {high}]")
    if data.get("threads") is not None and (not _is_int(data["threads"]) or data["threads"] < 1):
        raise _bad(source, "threads", data["threads"], "an integer >= 1, or null for torch's default")
    if backend == "zigzag":
        from_accel = data.get("accelerator")
        if not isinstance(from_accel, str) or not from_accel:
            raise _bad(source, "accelerator", from_accel, "a ZigZag accelerator name such as 'tpu_like'")
        clock = data.get("clock_hz")
        if not isinstance(clock, (int, float)) or isinstance(clock, bool) or clock <= 0:
            raise _bad(source, "clock_hz", clock,
                       "a positive number of cycles per second, e.g. 1.0e+9 (YAML needs the exponent sign)")
    else:
        for key in ("accelerator", "clock_hz"):
            if data.get(key) is not None:
                raise _bad(source, key, data[key], "null: only zigzag profiles take it")
    values = dict(data, device=device, dtype=dtype)
    if values.get("clock_hz") is not None:
        values["clock_hz"] = float(values["clock_hz"])
    return HardwareProfile(**values)


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate one profile file; its `name` must match the file name. Each file is parsed
    once while it is unchanged (a run looks its profiles up from many places)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise BadInputError(f"hardware profile {path}: cannot read it ({e}); fix or remove the file") from e
    return _load_profile(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _load_profile(path_text: str, _mtime_ns: int, _size: int) -> HardwareProfile:
    import yaml

    path = Path(path_text)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadInputError(f"hardware profile {path}: cannot read it as YAML ({e}); fix or remove the file") from e
    profile = profile_from_dict(data, str(path))
    if profile.name != path.stem:
        raise _bad(str(path), "name", profile.name, f"{path.stem!r}, the file's name without .yaml")
    return profile


# Folders of users' own profiles, registered for this process (register_profile_dir): a run
# registers its --profile-dir once, and every lookup by name then sees them.
_REGISTERED_DIRS: list[Path] = []


def register_profile_dir(folder: str | Path) -> None:
    """Add a folder of profile files (*.yaml) to every later lookup of this process; a profile of
    the same name as a shipped one replaces it. The folder must exist."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise BadInputError(f"hardware profile folder {str(folder)!r} does not exist; pass an existing folder")
    for path in sorted(folder.glob("*.yaml")):
        load_profile(path)  # a broken file is refused now, naming it, not at its first use
    if folder not in _REGISTERED_DIRS:
        _REGISTERED_DIRS.append(folder)


def registered_profile_dirs() -> list[Path]:
    return list(_REGISTERED_DIRS)


def _profile_files(extra_dirs) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in (PROFILES_DIR, *_REGISTERED_DIRS, *map(Path, extra_dirs)):
        if not folder.is_dir():
            raise BadInputError(f"hardware profile folder {str(folder)!r} does not exist; pass an existing folder")
        for path in sorted(folder.glob("*.yaml")):
            files[path.stem] = path  # a user's folder may override a shipped profile of the same name
    return files


def list_profiles(extra_dirs=()) -> list[str]:
    """Names of the shipped profiles plus those of registered folders and of `extra_dirs`."""
    return sorted(_profile_files(extra_dirs))


def profile_file(name: str, extra_dirs=()) -> str | None:
    """The file profile `name` is read from (None: no such file, e.g. a profile made in code)."""
    path = _profile_files(extra_dirs).get(name)
    return str(path) if path is not None else None


def get_profile(name: str | HardwareProfile, extra_dirs=()) -> HardwareProfile:
    """The validated profile called `name` (a HardwareProfile is returned as is)."""
    if isinstance(name, HardwareProfile):
        return name
    files = _profile_files(extra_dirs)
    if name not in files:
        raise BadInputError(f"unknown hardware profile {name!r}; choose one of {sorted(files)} "
                            f"or add {name}.yaml to a profile folder")
    return load_profile(files[name])


def profiles_for(names, given: dict | None = None, extra_dirs=(), what: str = "spec") -> dict[str, HardwareProfile]:
    """{name: HardwareProfile} of `names`, in their order: from `given` (the profiles a caller resolved
    once, as the runner does) or, for a direct caller without them, looked up by name."""
    if given is None:
        return {h: get_profile(h, extra_dirs) for h in names}
    missing = [h for h in names if h not in given]
    if missing:
        raise BadInputError(f"{what}: no profile given for hardware {missing}; pass every target's "
                            "HardwareProfile (or none, to look them up by name)")
    return {h: given[h] for h in names}
