#!/usr/bin/env bash
# The README's first command: set this host up from nothing, start a worker fleet on it,
# and run demo jobs through it. Changes the host like scripts/setup-host.sh does (Docker
# engine, btrfs volume store, local images, databases); installs the airlock package; starts
# `airlock worker` in the background (log: /var/log/airlock/worker.log; stop it with
# `pkill -f "airlock worker"`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

bash scripts/setup-host.sh
"$PY" -m pip install -q -e '.[bench]' 2>&1 | grep -v -e 'is ignored' -e 'as the .root. user' || true
airlock db upgrade

mkdir -p /var/log/airlock
if ! pgrep -f "airlock worker" >/dev/null; then
    : > /var/log/airlock/worker.log
    setsid airlock worker >>/var/log/airlock/worker.log 2>&1 < /dev/null &
fi
for _ in $(seq 60); do
    grep -q " ready." /var/log/airlock/worker.log 2>/dev/null && break
    sleep 1
done

echo
echo "\$ airlock run -c 'print(6*7)'"
airlock run -c 'print(6*7)'
echo
echo "\$ airlock run --timeout 2 -c 'while True: pass'"
airlock run --timeout 2 -c 'while True: pass' || echo "(exit $?)"
echo
echo "\$ airlock run --memory 64m -c 'a = bytearray(2**30)'"
airlock run --memory 64m -c 'a = bytearray(2**30)' || echo "(exit $?)"
echo
echo "The worker keeps running (log: /var/log/airlock/worker.log). Try: airlock run -c 'import os; print(os.getuid())'"
