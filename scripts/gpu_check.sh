#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): ResNet-18 at 224 px profiled on the `cuda` profile, its LUT
# calibrated and gated, a blockwise-exact search at latency budget 0.6, and the chosen model timed
# against the original (eager, and torch.compile where it compiles). Writes lut.parquet,
# calibration.json and gpu_check.json to $OUT (default ./gpu-check). Takes the machine's python3
# with torch, as a bare GPU machine has it (no Ray, no ZigZag, no network needed): the project runs
# from this checkout (PYTHONPATH), and nothing is downloaded. Budget: 8 minutes (`timeout`).
#   bash scripts/gpu_check.sh                     # on a GPU machine
#   PYTHON=.venv/bin/python bash scripts/gpu_check.sh --profile cpu --model resnet20 --image-size 32
# Any arguments go to benchmarks/gpu_check.py (--help lists them). Exit codes: as gpu_check.py's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-gpu-check}"
missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "torchvision", "numpy", "pyarrow", "yaml"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "error: $PY lacks $missing; install them (the versions pyproject.toml names; a machine without a network takes them as carried wheels)" >&2
  exit 2
fi
mkdir -p "$OUT"
"$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA devices: {torch.cuda.device_count()}")'
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 480 "$PY" -m benchmarks.gpu_check --out "$OUT" "$@"
