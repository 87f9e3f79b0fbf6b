"""ZigZag's stock API on one layer: the slow reference that the lean backend is checked against.

Only tests and benchmarks call this. It runs `zigzag.api.get_hardware_performance_zigzag` with its
defaults (LOMA over all loop orders at lpf_limit 6, up to 3 spatial mappings, minimal latency) and
lets it dump its json/pickle/plots into a temporary folder that is removed afterwards.
"""
from __future__ import annotations

import logging
import tempfile

from hw_profiles.zigzag_backend import (
    ConvWorkload,
    SimResult,
    _check_accelerator,
    _check_workload,
    _quiet_zigzag,
    hardware_yaml,
    mapping_yaml,
    workload_dict,
)


def stock_simulate(workload: ConvWorkload, accelerator: str = "tpu_like") -> SimResult:
    _check_accelerator(accelerator)
    _check_workload(workload)
    _quiet_zigzag()
    root = logging.getLogger()
    had_handlers = bool(root.handlers)
    from zigzag.api import get_hardware_performance_zigzag

    with tempfile.TemporaryDirectory(prefix="zigzag-stock-") as folder:
        energy, latency, _ = get_hardware_performance_zigzag(
            [workload_dict(workload)],
            str(hardware_yaml(accelerator)),
            str(mapping_yaml(accelerator)),
            dump_folder=folder,
            loma_show_progress_bar=False,
        )
    if not had_handlers:  # the API calls logging.basicConfig(INFO); undo that side effect
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
    return SimResult(cycles=float(latency), energy_pj=float(energy))
