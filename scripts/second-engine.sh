#!/usr/bin/env bash
# Run a second, independent dockerd beside the main one, to simulate a second
# Docker host (multi-host tests). Usage: second-engine.sh {start|stop|status}
# It has its own data root, exec root, pidfile, socket and its own pre-created
# bridge br-airlock2 (10.213.0.1/24) with --iptables=false, so it never touches
# the main engine's docker0 or iptables rules. `start` also copies
# airlock/sandbox:latest from the main engine if engine 2 lacks it (or has an
# older one). `stop` removes engine 2's containers, stops it and its bridge.
# Use it with: DOCKER_HOST=unix:///run/airlock-engine2.sock
set -euo pipefail

SOCK=/run/airlock-engine2.sock
HOST="unix://$SOCK"
DATA_ROOT=/var/lib/airlock/engine2
EXEC_ROOT=/run/airlock-engine2
PIDFILE=/run/airlock-engine2.pid
CONFIG=/var/lib/airlock/engine2-daemon.json
BRIDGE=br-airlock2
BRIDGE_CIDR=10.213.0.1/24
LOG=/var/log/airlock/engine2.log
IMAGE=airlock/sandbox:latest

log() { printf 'second-engine: %s\n' "$*"; }
d2() { docker -H "$HOST" "$@"; }

engine_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid=$(<"$PIDFILE")
    [[ -n "$pid" && -d "/proc/$pid" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    echo "$pid"
}

answers() { d2 info >/dev/null 2>&1; }

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_CIDR"; then
        ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
}

sync_image() {
    local src dst
    if ! src=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null); then
        log "WARNING: $IMAGE missing on the main engine (run scripts/build-images.sh); not copied"
        return 0
    fi
    dst=$(d2 image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    if [[ "$src" == "$dst" ]]; then
        log "$IMAGE already present on engine 2"
        return 0
    fi
    log "copying $IMAGE to engine 2"
    docker save "$IMAGE" | d2 load -q >/dev/null
}

start() {
    if engine_pid >/dev/null && answers; then
        log "already running (pid $(engine_pid))"
        sync_image
        return 0
    fi
    if pid=$(engine_pid); then
        log "pid $pid exists but does not answer on $SOCK; stop it first"
        exit 1
    fi
    rm -f "$PIDFILE"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$(dirname "$LOG")"
    [[ -f "$CONFIG" ]] || echo '{}' >"$CONFIG"   # never read the main engine's daemon.json
    ensure_bridge
    setsid dockerd \
        --config-file "$CONFIG" \
        --data-root "$DATA_ROOT" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$PIDFILE" \
        -H "$HOST" \
        --bridge "$BRIDGE" \
        --iptables=false \
        --ip-masq=false \
        >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 60); do
        answers && break
        sleep 1
    done
    if ! answers; then
        tail -n 50 "$LOG"
        log "engine 2 did not answer within 60 s"
        exit 1
    fi
    log "started (pid $(engine_pid), $HOST, log $LOG)"
    sync_image
}

stop() {
    local pid
    if ! pid=$(engine_pid); then
        log "not running"
    else
        if answers; then
            local ids
            ids=$(d2 ps -aq)
            if [[ -n "$ids" ]]; then
                # shellcheck disable=SC2086 # one id per word
                d2 rm -f $ids >/dev/null
                log "removed $(wc -w <<<"$ids") container(s)"
            fi
        fi
        kill -TERM "$pid"
        for _ in $(seq 30); do
            [[ -d "/proc/$pid" ]] || break
            sleep 1
        done
        if [[ -d "/proc/$pid" ]]; then
            log "dockerd $pid still running after 30 s, sending SIGKILL"
            kill -KILL "$pid"
        fi
        log "stopped (pid $pid)"
    fi
    rm -f "$PIDFILE"
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
}

status() {
    local pid
    if pid=$(engine_pid) && answers; then
        log "running (pid $pid, $HOST, $(d2 ps -q | wc -l) running container(s), images: $(d2 image ls -q | wc -l))"
    else
        log "not running"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
