#!/usr/bin/env bash
# Airlock's test command (the README's): ruff, then mypy, then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k quota -x
# All three run even if one fails; the exit status is non-zero if any failed.
# Tools run as `python3 -m ...` so they come from the interpreter the project is
# installed into (python3 -m pip install -e '.[dev]'); set PYTHON to override.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

# From nothing: the host (Docker, btrfs volumes, images, databases) and the package.
# Both steps are idempotent and take about a second once done; AIRLOCK_SKIP_SETUP=1 skips them.
if [[ "${AIRLOCK_SKIP_SETUP:-0}" != 1 ]]; then
    bash scripts/setup-host.sh
    "$PY" -m pip install -q -e '.[dev]' 2>&1 | grep -v -e 'is ignored' -e 'as the .root. user' || true
fi

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
step pytest "$PY" -m pytest --durations=25 "$@"
if (($# == 0)); then
    # The whole run: the attack suite once more with the worker's warm pool on (the first pass
    # runs its jobs cold): a job handed a pooled container is held to the same containment.
    step attacks-pooled env AIRLOCK_TEST_POOL_SIZE=1 "$PY" -m pytest -q tests/attacks
    # And once more under the agent profile (layer 6): every profile of the fleet gets its
    # image, its seccomp profile, its unmasked /proc; the rows expected to differ are said in
    # docs/attacks.md and by the tests (tests/conftest.py AGENT_RUN).
    step attacks-agent env AIRLOCK_TEST_PROFILES=agent "$PY" -m pytest -q tests/attacks
    # And the faults of a container's life with a warm pool in their fleets (the pool is on by
    # default; the first pass runs every fault cold, test_pool_faults.py pooled in both). The
    # outages of Redis, PostgreSQL and Flower, poison messages, admission and output memory
    # never touch a container, so they run once (CI stays within its 45 minutes).
    step faults-pooled env AIRLOCK_TEST_FAULT_POOL_SIZE=1 "$PY" -m pytest -q \
        tests/faults/test_f01_f02_worker_killed.py tests/faults/test_f04_hard_time_limit.py \
        tests/faults/test_f05_warm_shutdown.py tests/faults/test_f06_cold_shutdown.py \
        tests/faults/test_f11_duplicates.py tests/faults/test_f12_f14_engine.py \
        tests/faults/test_f13_removal.py tests/faults/test_f15_shared_daemon.py \
        tests/faults/test_f21_leftovers.py tests/faults/test_files_storing.py
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
