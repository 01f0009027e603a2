#!/usr/bin/env bash
# Build the job containers' PID 1 (workers/launcher.c) as a static binary at the host path the
# workers bind into every job container, read-only (Settings.launcher_path):
#   /usr/local/libexec/airlock/airlock-init          root:root 0755
#   /usr/local/libexec/airlock/airlock-init.sha256   the sha256 of the source it was built from
# Idempotent: rebuilds only when the source's sha256 differs from the recorded one (or with
# --force). The worker's preflight and `airlock doctor` refuse a missing or stale binary.
# Installs gcc and libc6-dev if missing. Run as root; called by scripts/setup-host.sh.
# Env: AIRLOCK_LAUNCHER_PATH (default /usr/local/libexec/airlock/airlock-init)
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT_DIR/workers/launcher.c"
DEST="${AIRLOCK_LAUNCHER_PATH:-/usr/local/libexec/airlock/airlock-init}"
CFLAGS=(-std=c11 -Wall -Wextra -Werror -O2 -static -s)
log() { printf 'build-launcher: %s\n' "$*"; }

[[ $EUID -eq 0 ]] || { log "must run as root (installs $DEST)"; exit 1; }
[[ "$DEST" == /* ]] || { log "AIRLOCK_LAUNCHER_PATH must be absolute: $DEST"; exit 1; }
force=0
[[ "${1:-}" == --force ]] && force=1

want=$(sha256sum "$SRC" | cut -d' ' -f1)
have=$(cut -d' ' -f1 "$DEST.sha256" 2>/dev/null || true)
if ((force == 0)) && [[ -x "$DEST" && ! -L "$DEST" && "$have" == "$want" ]]; then
    chown root:root "$DEST" "$DEST.sha256" && chmod 0755 "$DEST" && chmod 0644 "$DEST.sha256"
    log "up to date: $DEST (source ${want:0:12})"
    exit 0
fi

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
if ! command -v gcc >/dev/null || [[ ! -e /usr/lib/${multiarch:-x86_64-linux-gnu}/libc.a ]]; then
    log "installing gcc libc6-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi

dir=$(dirname "$DEST")
install -d -o root -g root -m 0755 "$dir"
tmp=$(mktemp "$dir/.airlock-init.XXXXXX")
trap 'rm -f "$tmp" "$tmp.sha256"' EXIT
gcc "${CFLAGS[@]}" -o "$tmp" "$SRC"
chown root:root "$tmp"
chmod 0755 "$tmp"
# Self-test: without a payload it must say so and exit 125.
rc=0
out=$("$tmp" 5 </dev/null 2>&1) || rc=$?
if [[ $rc -ne 125 || "$out" != "airlock: no payload" ]]; then
    log "FAIL: the fresh build answered an empty stdin with exit $rc: $out"
    exit 1
fi
printf '%s  %s\n' "$want" "workers/launcher.c" >"$tmp.sha256"
chmod 0644 "$tmp.sha256"
# The binary first, then its hash: an interrupted build is seen as stale and redone. Renames:
# running containers keep the inode they bound.
mv -f "$tmp" "$DEST"
mv -f "$tmp.sha256" "$DEST.sha256"
log "built $DEST ($(stat -c %s "$DEST") bytes, static) from source ${want:0:12}"
