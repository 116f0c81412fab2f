#!/usr/bin/env bash
# Install what tests/test_report.py needs to open report.html in a real browser: headless Chromium and
# its WebDriver (Debian packages `chromium` and `chromium-driver`) plus selenium in .venv. Idempotent.
# Without them the browser test skips. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
fi
VENV=${VENV:-.venv}
"$VENV/bin/python" -m pip install -q "selenium>=4.10"
chromium --version
chromedriver --version
