#!/usr/bin/env bash
# Airlock's test command (the README's): ruff, then mypy, then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k quota -x
# All three run even if one fails; the exit status is non-zero if any failed.
# Tools run as `python3 -m ...` so they come from the interpreter the project is
# installed into (python3 -m pip install -e '.[dev]'); set PYTHON to override.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

failed=()
step() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "=== $name: $*"
    "$@" || rc=$?
    echo "=== $name: exit $rc, $((SECONDS - start)) s"
    ((rc == 0)) || failed+=("$name")
}

step ruff "$PY" -m ruff check .
step mypy "$PY" -m mypy   # files/packages come from [tool.mypy] in pyproject.toml
step pytest "$PY" -m pytest "$@"

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
