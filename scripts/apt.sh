# Sourced by the install scripts (install-browser.sh, install-postgres.sh): installs Debian
# packages as root, or through `sudo -n` when that works; otherwise prints the exact command
# to run and fails.
#
#   apt_install WHO PACKAGE...
#
# `apt-get update` runs at most once per CI run: when $VINE_APT_UPDATED names a file (.ci/run
# sets it), an update is skipped while that file exists and the file is created after one.
# Without it every install updates first.

apt_install() {
    local who=$1
    shift
    local command="apt-get update && apt-get install -y $*"
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            as_root=(sudo)
        else
            echo "$who: this needs $*; as root run:" >&2
            echo "    sudo sh -c '$command'" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: no apt-get here; install $* with this system's package manager" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -n "${VINE_APT_UPDATED:-}" ] && [ -e "$VINE_APT_UPDATED" ]; then
        echo "$who: apt-get update already ran in this CI run" >&2
    else
        "${as_root[@]}" apt-get update -qq
        if [ -n "${VINE_APT_UPDATED:-}" ]; then
            : >"$VINE_APT_UPDATED"
        fi
    fi
    "${as_root[@]}" apt-get install -y -qq "$@" >/dev/null
}
