#!/usr/bin/env bash
# Install what tests/test_example_workflows.py needs to drive the real ComfyUI web page,
# idempotently (re-running skips what is already there):
#   - Debian's chromium (playwright's own browser download needs the internet: not used)
#   - Python playwright, pinned, into .venv (created by scripts/setup_env.sh)
# Usage: scripts/setup_browser.sh      (needs root or sudo for apt-get the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT_VERSION=1.65.2
CHROMIUM=${ACT_CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
  echo "[setup-browser] installing Debian's chromium"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup-browser] no .venv: run scripts/setup_env.sh first" >&2
  exit 1
fi
if ! .venv/bin/python - "$PLAYWRIGHT_VERSION" <<'PY' 2>/dev/null
import importlib.metadata, sys
sys.exit(importlib.metadata.version("playwright") != sys.argv[1])
PY
then
  echo "[setup-browser] installing playwright==$PLAYWRIGHT_VERSION (driver only, no browsers)"
  .venv/bin/python -m pip --disable-pip-version-check -q install "playwright==$PLAYWRIGHT_VERSION"
fi
echo "[setup-browser] $("$CHROMIUM" --version 2>/dev/null | head -1), playwright $PLAYWRIGHT_VERSION"
