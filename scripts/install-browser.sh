#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) for
# the real-browser tests (tests/support/browser.rs). Idempotent: when both `chromium` and
# `chromedriver` are on PATH nothing is installed and it returns at once.
#
#   scripts/install-browser.sh
#
# Runs apt-get as root, or through sudo when that is available; otherwise prints the command
# to run and exits non-zero.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    echo "browser already installed: $(chromedriver --version 2>/dev/null | head -n 1)" >&2
    exit 0
fi

command="apt-get update && apt-get install -y chromium chromium-driver"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif have sudo && sudo -n true 2>/dev/null; then
    as_root=(sudo)
else
    echo "install-browser: the browser tests need chromium and chromedriver; as root run:" >&2
    echo "    sudo sh -c '$command'" >&2
    exit 1
fi
if ! have apt-get; then
    echo "install-browser: no apt-get here; install Chromium and a matching chromedriver" >&2
    echo "and put both on PATH (as 'chromium' and 'chromedriver')" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null

if ! have chromium || ! have chromedriver; then
    echo "install-browser: apt-get finished but chromium or chromedriver is still not on PATH" >&2
    exit 1
fi
echo "browser installed: $(chromedriver --version 2>/dev/null | head -n 1)" >&2
