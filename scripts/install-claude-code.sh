#!/usr/bin/env bash
# Installs the real Claude Code CLI (npm package @anthropic-ai/claude-code) into DIR, for the
# end-to-end tests (tests/claude_e2e.rs) and CI. Idempotent: when DIR already holds a working
# CLI nothing is downloaded. Concurrent runs on the same DIR wait for each other (flock).
#
#   scripts/install-claude-code.sh DIR        # then DIR/node_modules/.bin/claude --version
#
# Environment: CLAUDE_CODE_VERSION (npm version range, default ^2.1.197),
# CLAUDE_CODE_INSTALL_TIMEOUT (seconds for npm install, default 180).
# Prints the path of the claude binary on the last line of stdout; exits non-zero if the CLI
# cannot be installed (no npm, no network...).
set -euo pipefail

dir=${1:?usage: install-claude-code.sh DIR}
version=${CLAUDE_CODE_VERSION:-^2.1.197}
limit=${CLAUDE_CODE_INSTALL_TIMEOUT:-180}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bin="$dir/node_modules/.bin/claude"

works() { [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; }

# One installer at a time per directory (the test binary and CI may race).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.install.lock"
    flock 9
fi

want="{\"dependencies\":{\"@anthropic-ai/claude-code\":\"$version\"},\"allowScripts\":{\"@anthropic-ai/claude-code\":true}}"
if works && [ "$(cat "$dir/package.json" 2>/dev/null)" = "$want" ]; then
    echo "claude-code already installed: $("$bin" --version)" >&2
    echo "$bin"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-claude-code: npm is not installed (apt-get install nodejs npm)" >&2
    exit 1
fi

# npm 11 runs a dependency's install script only when allowScripts lists it; the CLI's
# postinstall links the native binary, so --ignore-scripts must not be used.
printf '%s\n' "$want" >"$dir/package.json"
run=(npm install --no-audit --no-fund --no-update-notifier --fetch-retries=1 --fetch-timeout=60000)
if command -v timeout >/dev/null 2>&1; then
    run=(timeout "$limit" "${run[@]}")
fi
if ! (cd "$dir" && "${run[@]}" >"$dir/npm.log" 2>&1); then
    echo "install-claude-code: npm install failed (log: $dir/npm.log); its last lines:" >&2
    tail -n 20 "$dir/npm.log" >&2 || true
    exit 1
fi
if ! works; then
    echo "install-claude-code: installed, but $bin --version does not run (log: $dir/npm.log)" >&2
    tail -n 20 "$dir/npm.log" >&2 || true
    exit 1
fi
echo "claude-code installed: $("$bin" --version)" >&2
echo "$bin"
