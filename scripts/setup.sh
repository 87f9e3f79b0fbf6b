#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs the project with all its extras and the test extras.
# Idempotent: a second run only checks that everything is installed.
#
# As root on Debian/Ubuntu it also installs the system packages that Ray's cluster launcher needs on every
# host (ssh, sshd and rsync: `ray up` logs in and syncs files with them) and that the cluster-box tests use
# (iproute2's `ip`), and headless Chromium with its driver (the report's browser test,
# tests/orchestrator/test_report_browser.py), when one is missing; HALOC_SETUP_APT=0 skips that. Note that on a machine run by
# systemd, installing openssh-server also starts an ssh service.
set -euo pipefail
cd "$(dirname "$0")/.."

system_packages=(openssh-client openssh-server rsync iproute2 chromium chromium-driver)
if [ "${HALOC_SETUP_APT:-1}" != 0 ] && command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing ${missing[*]} (for ray up, tests/cluster_box and the report's browser test)"
      if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "setup: warning: could not install ${missing[*]}; ray up needs them on every host and the" \
             "cluster-box tests skip without them (they say so)" >&2
      fi
    else
      echo "setup: note: ${missing[*]} not installed; ray up needs them on every host, and the cluster-box" \
           "tests need them: sudo apt-get install ${missing[*]}" >&2
    fi
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision first, pinned: these builds lie on the project's development machines' disk.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[all,test]"
