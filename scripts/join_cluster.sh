#!/usr/bin/env bash
# Joins this host (a Jetson board, or any host) to a running HALOC Ray cluster, offering the hardware
# that `python -m workers.detect` finds here as Ray custom resources (hw_cpu, hw_cuda, hw_jetson, hw_asic).
#
#     bash scripts/join_cluster.sh HEAD_ADDRESS [--dry-run] [more `ray start` flags...]
#     bash scripts/join_cluster.sh 10.0.0.1:6379
#     bash scripts/join_cluster.sh 10.0.0.1 --node-ip-address=10.0.0.7
#
# Needs the project's .venv/ (scripts/setup.sh, or on a Jetson the steps in docs/cluster.md) with the
# same Ray and Python versions as the head, and the cluster's auth token in ~/.ray/auth_token (copy it
# from the head). --dry-run prints the `ray start` command instead of running it.
# Leave the cluster with `.venv/bin/ray stop` on this host (it ends every Ray process of this user here).
set -euo pipefail

usage() {
  echo "usage: bash scripts/join_cluster.sh HEAD_ADDRESS [--dry-run] [more ray start flags...]" >&2
  echo "  HEAD_ADDRESS: the head's host or host:port (port 6379 when omitted), e.g. 10.0.0.1:6379" >&2
}

if [ $# -lt 1 ] || [ -z "$1" ] || [ "${1#-}" != "$1" ]; then
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
  esac
  echo "error: missing HEAD_ADDRESS (the address of the running cluster's head)" >&2
  usage
  exit 2
fi
address=$1
shift
case "$address" in
  *:*) ;;
  *) address="$address:6379" ;;
esac

dry_run=0
extra=()
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then dry_run=1; else extra+=("$arg"); fi
done

root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
ray="$root/.venv/bin/ray"
if [ ! -x "$python" ]; then
  echo "error: no virtual environment at $root/.venv; create it first: bash scripts/setup.sh" >&2
  echo "  (on a Jetson: see docs/cluster.md, 'Jetson boards', to keep JetPack's PyTorch)" >&2
  exit 1
fi
if [ ! -x "$ray" ] || ! "$python" -c "import ray" 2>/dev/null; then
  echo "error: Ray is not installed in $root/.venv; install the project there: $python -m pip install -e \".[all,test]\"" >&2
  exit 1
fi

# Ray 2.60: a node joining a token-authenticated cluster needs the mode set and the head's token.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# As the cluster files: compare Python major.minor with the head, not the patch level (Ray's default).
export RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL="${RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL:-minor}"
if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] \
   && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
  echo "error: no Ray auth token at ${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}; copy the head's token:" >&2
  echo "  mkdir -p ~/.ray && scp USER@HEAD:.ray/auth_token ~/.ray/auth_token   (or set RAY_AUTH_TOKEN)" >&2
  exit 1
fi

cd "$root"  # workers.detect is imported from the repository
resources="$("$python" -m workers.detect)"
echo "joining $address with resources $resources (Python $("$python" -c 'import platform; print(platform.python_version())'), Ray $("$python" -c 'import ray; print(ray.__version__)'))" >&2
cmd=("$ray" start "--address=$address" "--resources=$resources" --disable-usage-stats ${extra[@]+"${extra[@]}"})
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
