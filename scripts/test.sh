#!/usr/bin/env bash
# Sets up .venv/ if needed, then runs the test suite.
#   bash scripts/test.sh           the whole suite, slow tests included (what CI runs, .ci/run)
#   bash scripts/test.sh --fast    the fast tier: no Ray cluster, no subprocess pipeline, no S3 server
# Any other arguments go to pytest. Every run prints its 20 slowest tests (pyproject.toml's addopts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
tier=()
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not (slow or ray or s3 or cluster_box or pipeline)")
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "${tier[@]}" "$@"
