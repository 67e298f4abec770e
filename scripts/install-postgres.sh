#!/usr/bin/env bash
# Installs PostgreSQL (Debian's `postgresql`) for the tests and benches that run a throwaway
# cluster (tests/support/pg.rs: `initdb` and `pg_ctl` in a temporary directory). Idempotent:
# when `initdb` is on PATH or in /usr/lib/postgresql/*/bin nothing is installed and it
# returns at once.
#
#   scripts/install-postgres.sh
#
# Runs apt-get as root, or through sudo when that is available; otherwise prints the command
# to run and exits non-zero. .ci/run runs it before `cargo test`.
set -euo pipefail
. "$(dirname "$0")/apt.sh"

find_initdb() {
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    local f
    for f in /usr/lib/postgresql/*/bin/initdb; do
        if [ -x "$f" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

if initdb=$(find_initdb); then
    echo "PostgreSQL already installed: $("$initdb" --version)" >&2
    exit 0
fi

apt_install install-postgres postgresql

if ! initdb=$(find_initdb); then
    echo "install-postgres: apt-get finished but initdb is not on PATH nor in /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
echo "PostgreSQL installed: $("$initdb" --version)" >&2
