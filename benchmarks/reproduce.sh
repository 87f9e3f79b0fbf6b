#!/usr/bin/env bash
# Reruns the benchmarks whose figures BENCHMARKS.md renders from committed result files
# (benchmarks/results/), then renders its tables from them again (python -m benchmarks.tables).
#   bash benchmarks/reproduce.sh           every such section, one after the other
#   bash benchmarks/reproduce.sh 10 11     the sections named
#   bash benchmarks/reproduce.sh --list    what each section runs, its result file and its measured time
# Run it on a quiet machine: the figures are timings, and another job's load is measured with them
# (each result file records the load at its start and end). Sections 1-9 have no committed result
# file yet: their figures were measured before results were committed, and BENCHMARKS.md gives the
# command that produced each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# section | result file | measured time on the 2-core development machine | command
SECTIONS=(
  "10|timing_protocol.json|4.5 min (2026-12-06)|$PY benchmarks/bench_timing_protocol.py"
  "11|first_run.json|48 min (2026-12-07)|$PY benchmarks/first_run.py"
)

if [ "${1:-}" = "--list" ]; then
  for s in "${SECTIONS[@]}"; do
    IFS='|' read -r n file took cmd <<<"$s"
    echo "section $n: $cmd -> benchmarks/results/$file (took $took)"
  done
  exit 0
fi

wanted=("$@")
for s in "${SECTIONS[@]}"; do
  IFS='|' read -r n file took cmd <<<"$s"
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $n " ]]; then
    continue
  fi
  echo "== section $n: $cmd (took $took when measured)"
  $cmd
done
$PY -m benchmarks.tables
