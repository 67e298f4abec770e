#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) for
# the real-browser tests (tests/support/browser.rs). Idempotent: when both `chromium` and
# `chromedriver` are on PATH nothing is installed and it returns at once.
#
#   scripts/install-browser.sh
#
# Runs apt-get as root, or through sudo when that is available; otherwise prints the command
# to run and exits non-zero (scripts/apt.sh).
set -euo pipefail
. "$(dirname "$0")/apt.sh"

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    echo "browser already installed: $(chromedriver --version 2>/dev/null | head -n 1)" >&2
    exit 0
fi

apt_install install-browser chromium chromium-driver

if ! have chromium || ! have chromedriver; then
    echo "install-browser: apt-get finished but chromium or chromedriver is still not on PATH" >&2
    exit 1
fi
echo "browser installed: $(chromedriver --version 2>/dev/null | head -n 1)" >&2
