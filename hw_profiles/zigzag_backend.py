"""Latency and energy of conv / linear layers on an ASIC accelerator simulated by ZigZag.

`simulate([ConvWorkload(...), ...], "tpu_like")` runs ZigZag's own parser, spatial-mapping stage and
cost model in memory (no files written) with a lean temporal-mapping search (`_zigzag_search`), so a
layer takes a fraction of a second instead of seconds with `zigzag.api.get_hardware_performance_zigzag`.
Each (layer shape, accelerator) is simulated once per process and cached. The accelerators are the
yaml models shipped inside the zigzag package, with their shipped mapping (or ZigZag's default).
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haloc.errors import BadInputError

# Accelerator name -> mapping yaml name, for the shipped models that map a Conv with ZigZag's stock
# stages. Left out: IMC arrays (aimc, dimc: another cost model), generic_array_cacti (runs CACTI,
# which writes files), gemm_l1* (matrix engines without conv loops).
_MAPPINGS = {
    "tpu_like": "tpu_like",  # 32x32 weight-stationary systolic array
    "edge_tpu_like": "edge_tpu_like",  # 8x8x4x4
    "eyeriss_like": "default",  # 14x12 row-stationary-like, spatial mapping searched
    "ascend_like": "ascend_like",  # 16x16x2x2
    "tesla_npu_like": "tesla_npu_like",  # 32x32x4
    "meta_prototype": "meta_prototype_like",  # 32x2x4x4
}

# ZigZag's example precisions (bits): 8-bit operands, 16-bit partial sums.
_PRECISION = {"O": 16, "O_final": 8, "W": 8, "I": 8}
_LPF_LIMIT = 6  # the stock API's default: the same loop factors as ZigZag's own search
_SPATIAL_MAPPINGS = 3  # the stock API's default number of generated spatial mappings


@dataclass(frozen=True)
class ConvWorkload:
    """One conv layer (groups 1, dilation 1). A Linear(in, out) is ConvWorkload(in, out) on 1x1."""

    c_in: int
    c_out: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    in_hw: tuple[int, int] = (1, 1)  # input spatial size (height, width)
    batch: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(  # type: ignore[return-value]
            (self.in_hw[i] + 2 * self.padding[i] - self.kernel[i]) // self.stride[i] + 1 for i in range(2)
        )

    @classmethod
    def from_module(cls, module: Any, in_hw: tuple[int, int] = (1, 1), batch: int = 1) -> ConvWorkload:
        """From a torch Conv2d or Linear (read by attribute, so torch is not imported here)."""
        if hasattr(module, "in_features"):  # Linear: one output pixel
            return cls(module.in_features, module.out_features, batch=batch)
        dilation = tuple(getattr(module, "dilation", (1, 1)))
        if dilation != (1, 1):
            raise BadInputError(
                f"conv dilation: got {dilation}; the ZigZag backend supports only (1, 1); "
                "profile this layer with a torch backend instead"
            )
        groups = getattr(module, "groups", 1)
        if groups != 1:
            raise BadInputError(
                f"conv groups: got {groups}; the ZigZag backend supports only 1; "
                "profile this layer with a torch backend instead"
            )
        padding = module.padding
        if isinstance(padding, str):
            raise BadInputError(f"conv padding: got {padding!r}; give explicit integers, e.g. (1, 1)")
        return cls(module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                   tuple(padding), tuple(in_hw), batch)


@dataclass(frozen=True)
class SimResult:
    cycles: float
    energy_pj: float


def list_accelerators() -> list[str]:
    """Accelerator models shipped with zigzag that this backend can simulate."""
    return sorted(_MAPPINGS)


def simulate(workloads: Sequence[ConvWorkload], accelerator: str = "tpu_like") -> SimResult:
    """Cycles and energy of running the layers one after the other (the sums of per-layer results)."""
    _check_accelerator(accelerator)
    if isinstance(workloads, ConvWorkload):
        workloads = [workloads]
    for workload in workloads:
        _check_workload(workload)
    results = [_simulate_cached(workload, accelerator) for workload in workloads]
    return SimResult(sum(r.cycles for r in results), sum(r.energy_pj for r in results))


def cache_info() -> dict[str, int]:
    """How many layers were simulated (misses) and served from the cache (hits) in this process."""
    with _LOCK:
        return dict(_STATS)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _STATS.update(hits=0, misses=0)


# ---------------------------------------------------------------- validation

def _check_accelerator(accelerator: str) -> None:
    if accelerator not in _MAPPINGS:
        raise BadInputError(
            f"accelerator: got {accelerator!r}; allowed: {', '.join(list_accelerators())}; "
            "pick one of these in the hardware profile"
        )


def _check_workload(w: Any) -> None:
    if not isinstance(w, ConvWorkload):
        raise BadInputError(f"workload: got {type(w).__name__}; expected a ConvWorkload")

    def pair(name: str, value: Any, minimum: int) -> None:
        ok = isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
        if not ok:
            raise BadInputError(f"ConvWorkload.{name}: got {value!r}; expected a pair of integers >= {minimum}")

    for name in ("c_in", "c_out", "batch"):
        value = getattr(w, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadInputError(f"ConvWorkload.{name}: got {value!r}; expected an integer >= 1")
    pair("kernel", w.kernel, 1)
    pair("stride", w.stride, 1)
    pair("padding", w.padding, 0)
    pair("in_hw", w.in_hw, 1)
    if min(w.out_hw) < 1:
        raise BadInputError(
            f"ConvWorkload: kernel {w.kernel} with padding {w.padding} does not fit input {w.in_hw}; "
            "the output would be empty: use a larger in_hw or more padding"
        )


# ---------------------------------------------------------------- cache

_LOCK = threading.Lock()  # guards the cache and serialises ZigZag runs (its objects are not shared-safe)
_CACHE: dict[tuple[ConvWorkload, str], SimResult] = {}
_STATS = {"hits": 0, "misses": 0}


def _simulate_cached(workload: ConvWorkload, accelerator: str) -> SimResult:
    key = (workload, accelerator)
    with _LOCK:  # held across the run, so two threads never simulate the same layer twice
        if key in _CACHE:
            _STATS["hits"] += 1
            return _CACHE[key]
        result = _disk_get(key)
        if result is None:
            result = _run_zigzag(workload, accelerator)
            _STATS["misses"] += 1
            _disk_put(key, result)
        else:
            _STATS["hits"] += 1
        _CACHE[key] = result
        return result


# A node-wide cache on disk (sqlite: safe across the profiler actors' processes), so a layer shape
# simulated while profiling is not simulated again for calibration or validation, nor by a rerun.
# $HALOC_ZIGZAG_CACHE names the file; "off" disables it. Keyed by zigzag's version too.
def _disk_path() -> str | None:
    import os

    path = os.environ.get("HALOC_ZIGZAG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "haloc",
                                                             "zigzag.sqlite"))
    return None if path == "off" else path


def _disk_key(key: tuple[ConvWorkload, str]) -> str:
    from importlib.metadata import version

    w, acc = key
    return f"{version('zigzag-dse')}|{acc}|{w.c_in},{w.c_out},{w.kernel},{w.stride},{w.padding},{w.in_hw},{w.batch}"


def _disk(path: str):
    import os
    import sqlite3

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS sim (key TEXT PRIMARY KEY, cycles REAL, energy_pj REAL)")
    return conn


def _disk_get(key) -> SimResult | None:
    path = _disk_path()
    if path is None:
        return None
    try:
        with _disk(path) as conn:
            row = conn.execute("SELECT cycles, energy_pj FROM sim WHERE key = ?", (_disk_key(key),)).fetchone()
    except Exception as e:  # an unreadable cache only costs time: simulate instead, and say so once
        logging.getLogger(__name__).warning("zigzag disk cache %s unreadable (%s); simulating", path, e)
        return None
    return SimResult(row[0], row[1]) if row else None


def _disk_put(key, result: SimResult) -> None:
    path = _disk_path()
    if path is None:
        return
    try:
        with _disk(path) as conn:
            conn.execute("INSERT OR REPLACE INTO sim VALUES (?, ?, ?)", (_disk_key(key), result.cycles,
                                                                        result.energy_pj))
    except Exception as e:
        logging.getLogger(__name__).warning("zigzag disk cache %s not writable (%s)", path, e)


# ---------------------------------------------------------------- ZigZag

def _zigzag_inputs() -> Path:
    spec = importlib.util.find_spec("zigzag")
    if spec is None or spec.origin is None:
        raise BadInputError("zigzag is not installed: pip install zigzag-dse==3.9.1 six")
    return Path(spec.origin).parent / "inputs"


def hardware_yaml(accelerator: str) -> Path:
    _check_accelerator(accelerator)
    return _zigzag_inputs() / "hardware" / f"{accelerator}.yaml"


def mapping_yaml(accelerator: str) -> Path:
    _check_accelerator(accelerator)
    return _zigzag_inputs() / "mapping" / f"{_MAPPINGS[accelerator]}.yaml"


def workload_dict(w: ConvWorkload, layer_id: int = 0) -> dict[str, Any]:
    """ZigZag's workload format for one conv layer (both operands constant: the layer stands alone)."""
    out_h, out_w = w.out_hw
    return {
        "id": layer_id,
        "name": f"layer{layer_id}",
        "operator_type": "Conv",
        "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
        "dimension_relations": [f"ix={w.stride[1]}*ox+1*fx", f"iy={w.stride[0]}*oy+1*fy"],
        "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
        "loop_sizes": [w.batch, w.c_out, w.c_in, out_h, out_w, w.kernel[0], w.kernel[1]],
        "operand_precision": dict(_PRECISION),
        "operand_source": {"W": layer_id, "I": layer_id},
        # ZigZag subtracts the padding from the input extent it derives, only if pr_loop_dims is set
        "pr_loop_dims": ["IX", "IY"],
        "padding": [[w.padding[1], w.padding[1]], [w.padding[0], w.padding[0]]],
    }


_PARSED: dict[str, tuple[Any, Any]] = {}  # accelerator -> (Accelerator, mapping data), under _LOCK


def _quiet_zigzag() -> None:
    # ZigZag logs INFO/WARNING lines for every layer (e.g. "Operator Conv not defined in mapping");
    # keep them out of our output unless the user configured the "zigzag" logger themselves.
    log = logging.getLogger("zigzag")
    if log.level == logging.NOTSET:
        log.setLevel(logging.ERROR)


def _parsed(accelerator: str) -> tuple[Any, Any]:
    if accelerator not in _PARSED:
        from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
        from zigzag.stages.parser.workload_parser import WorkloadParserStage

        _PARSED[accelerator] = (
            AcceleratorParserStage.parse_accelerator(str(hardware_yaml(accelerator))),
            WorkloadParserStage.parse_mapping_data(str(mapping_yaml(accelerator))),
        )
    return _PARSED[accelerator]


def _layer_node(w: ConvWorkload, mapping_data: Any) -> Any:
    from zigzag.parser.workload_factory import LayerNodeFactory
    from zigzag.parser.workload_validator import WorkloadValidator

    validator = WorkloadValidator([workload_dict(w)])
    if not validator.validate():
        raise RuntimeError(f"ZigZag rejected the workload built for {w}: {validator.validator.errors}")
    return LayerNodeFactory(validator.normalized_data[0], mapping_data).create()


def _run_zigzag(w: ConvWorkload, accelerator: str) -> SimResult:
    _quiet_zigzag()
    from zigzag.mapping.temporal_mapping import TemporalMappingType
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.results.reduce_stages import MinimalLatencyStage

    from hw_profiles._zigzag_search import LeanTemporalMappingStage

    hardware, mapping_data = _parsed(accelerator)
    # The stock API's per-layer pipeline minus the workload iteration and the save/plot stages.
    stages = [
        MinimalLatencyStage,  # best over spatial mappings
        SpatialMappingGeneratorStage,
        MinimalLatencyStage,  # best over temporal mappings
        LeanTemporalMappingStage,
        CostModelStage,
    ]
    answers = MainStage(
        stages,
        accelerator=hardware,
        layer=_layer_node(w, mapping_data),
        loma_lpf_limit=_LPF_LIMIT,
        loma_show_progress_bar=False,
        nb_mappings_generated=_SPATIAL_MAPPINGS,
        enable_mix_spatial_mapping_generation=False,
        access_same_data_considered_as_no_access=True,  # as the stock API
        temporal_mapping_type=TemporalMappingType.UNEVEN,
    ).run()
    cme = answers[0][0]
    return SimResult(cycles=float(cme.latency_total2), energy_pj=float(cme.energy_total))
