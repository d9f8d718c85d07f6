#!/usr/bin/env bash
# All of the project's tests, as the README's test command and CI (.ci/run) run them:
#   1. install (editable, with the dev extra), 2. ruff check + format --check, lint-imports
#   (import-linter), mypy --strict, actionlint,
#   3. pytest: unit tests, stand-in tests, pytester runs, the fault matrix, the acceptance suite,
#   4. the acceptance suite once more on the testcontainers backend, with a Docker engine and a
#      PostgreSQL image built from this machine's binaries (no registry needed).
set -euo pipefail
cd "$(dirname "$0")/.."

# pytest exits 5 when it collected no test: for us that is a broken run, never a green one.
run_pytest() {
    local rc=0
    python -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest $*: no tests were collected; treating as a failure" >&2
        return 1
    fi
    return "$rc"
}

# pgbouncer, chromium, nodejs/npm and actionlint: each skipped when present, else installed
# with one line saying what and why (scripts/test-tools.sh; README lists them)
source scripts/test-tools.sh
ensure_test_tools

python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# chromium's screenshots of a GO, a flag-off NO-GO and a config-error report (test_fault_matrix)
export CRON_DRYRUN_ARTEFACTS="${CRON_DRYRUN_ARTEFACTS:-audit/report-screenshots}"
ruff check .
ruff format --check .
# the package's shape (pyproject.toml [tool.importlinter]) and its types
lint-imports
mypy --strict cron_dryrun

"$ACTIONLINT" '.github/workflows/*.yml'

run_pytest -p no:cacheprovider

# The engine is stopped on any exit, failure or signal included; the script stops only an
# engine it started itself.
trap 'bash scripts/docker-postgres-image.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
SECONDS=0
tc_image=$(bash scripts/docker-postgres-image.sh | tail -n 1)
echo "testcontainers: engine and image ${tc_image} ready after ${SECONDS}s"
DB_BACKEND=testcontainers POSTGRES_IMAGE="$tc_image" run_pytest -p no:cacheprovider acceptance/ -m dryrun \
    --audit-dir=audit/testcontainers --run-label "CI testcontainers"
POSTGRES_IMAGE="$tc_image" run_pytest -p no:cacheprovider tests/test_containers.py
echo "testcontainers backend: ${SECONDS}s extra CI time"
