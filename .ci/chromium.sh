#!/usr/bin/env bash
# Install Debian's chromium for the HTML report check (tests/test_report_html.py).
# Idempotent: quick when /usr/bin/chromium is already there. Never fatal: without a browser the
# HTML test is skipped with a reason, and the rest of CI still runs.
set -uo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium.sh: apt-get not found; the headless-browser HTML test will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "chromium.sh: not root and no sudo; the headless-browser HTML test will be skipped" >&2
    exit 0
  fi
fi
echo "== installing chromium (Debian package)"
export DEBIAN_FRONTEND=noninteractive
PACKAGES="chromium fonts-dejavu-core"
# try the package lists already on the machine first; refresh them once only if that fails
if ! $SUDO apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  $SUDO apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null \
    || echo "chromium.sh: installing chromium failed; the HTML test will be skipped" >&2
fi
exit 0
