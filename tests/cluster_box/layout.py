"""The box's hosts for HALOC: a client, a head that offers no hardware (it runs the driver, Tune and Train
work), one ASIC-simulator host, one CPU-timing host, and a GPU host where this machine has a GPU."""
from __future__ import annotations

import shutil
import subprocess

from .box import HostSpec


def gpu_present() -> bool:
    """An NVIDIA GPU that torch could use (checked without importing torch)."""
    if not shutil.which("nvidia-smi"):
        return False
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and "GPU" in out.stdout


# The head's failure detection, shortened for the box's tests: Ray's GCS marks a silent node dead after 5
# missed health checks (defaults: every 3 s, 10 s timeout, about 65 s in all; here about 20 s), and the
# launcher's autoscaler restarts Ray on a host 20 s (default 30 s) after its last heartbeat.
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": 1000, "RAY_health_check_timeout_ms": 3000,
                          "RAY_health_check_failure_threshold": 5, "AUTOSCALER_HEARTBEAT_TIMEOUT_S": 20}


def default_hosts(gpu: bool | None = None) -> list[HostSpec]:
    hosts = [HostSpec("client", 2, cluster=False),
             # no hw_*: profiling and timing stay off the driver's host
             HostSpec("head", 10, offer_only="", extra_env=FAST_FAILURE_DETECTION),
             HostSpec("asic", 11, offer_only="hw_asic"),
             HostSpec("cpu", 12, offer_only="hw_cpu")]
    if gpu_present() if gpu is None else gpu:
        hosts.append(HostSpec("cuda", 13, offer_only="hw_cuda"))
    return hosts


def hardware_of(hosts: list[HostSpec]) -> list[str]:
    """The pipeline's --hardware for these hosts (profile names: hw_asic -> asic, ...)."""
    return [h.offer_only.removeprefix("hw_") for h in hosts if h.cluster and h.offer_only]
