#!/usr/bin/env bash
# Network stand-ins for Airlock's isolation tests: fake metadata services,
# private-range hosts and host-side services, each counting every contact, so a
# missing block shows up as a hit on a listener we own instead of as a packet
# sent to a real address.
#   up     network namespace "airlock-standin" joined to the host by a veth pair
#          (this kernel has no dummy interfaces), holding the addresses below, with
#          host routes (/32, /128) pointing each one into it; listeners there; and
#          listeners on the host's own addresses (incl. the Docker bridge gateways)
#          for 5432 6379 5555 2375 22 where the port is free on that address.
#          Waits until every TCP listener answers from the host, then zeroes counts.
#   down   stops our listeners (by recorded pid), removes routes, veth and netns.
#   hits   prints {"name": count, ...}; reset zeroes every count.
#   list   prints the targets, one "name address tcp-ports udp-ports" a line.
# State: /run/airlock-standins (hits/<name>, pids/<name>, targets.tsv).
# Env: PYTHON (default python3).
set -euo pipefail

STATE=/run/airlock-standins
NS=airlock-standin
VETH_HOST=alsb-h
VETH_NS=alsb-n
LINK4_HOST=198.18.0.1  # RFC 2544 benchmark range: never routed, collides with nothing here
LINK4_NS=198.18.0.2
LINK6_HOST=fdaa:ffff::1
LINK6_NS=fdaa:ffff::2
NS_TCP=22,53,80,443,2375,3128,5432,5555,6379,8080
NS_UDP=53
HOST_PORTS=(5432 6379 5555 2375 22)
LISTENER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/standin_listener.py"
PYTHON="${PYTHON:-python3}"

# name address: one address each, all inside the namespace. "dns-resolver" is the
# upstream that tests give containers (--dns) so a forwarded lookup is counted here;
# "internet" (TEST-NET-2) stands for any public address a job might dial directly.
STANDINS=(
    "metadata 169.254.169.254"
    "ecs-metadata 169.254.170.2"
    "alibaba-metadata 100.100.100.200"
    "azure-wireserver 168.63.129.16"
    "private-10 10.99.0.10"
    "private-172 172.31.254.10"
    "private-192 192.168.254.10"
    "cgnat-100-64 100.64.0.10"
    "dns-resolver 10.99.0.53"
    "internet 198.51.100.10"
    "ula-v6 fdaa:1::10"
    "metadata-v6 fd00:ec2::254"
)

log() { printf 'standins: %s\n' "$*" >&2; }

start_listener() {  # name netns-or-empty address tcp-ports udp-ports
    local name=$1 netns=$2 addr=$3 tcp=$4 udp=$5
    local cmd=("$PYTHON" "$LISTENER" "$STATE/hits/$name" "$addr" --tcp "$tcp" --udp "$udp"
               --ready "$STATE/ready/$name")
    [[ -n "$netns" ]] && cmd=(ip netns exec "$netns" "${cmd[@]}")
    setsid "${cmd[@]}" </dev/null >"$STATE/logs/$name" 2>&1 &
    echo "$!" >"$STATE/pids/$name"
    printf '%s\t%s\t%s\t%s\n' "$name" "$addr" "$tcp" "$udp" >>"$STATE/targets.pending"
}

wait_bound() {  # keep listeners that bound their ports; drop those that could not
    local name addr tcp udp pid skipped=()
    while IFS=$'\t' read -r name addr tcp udp; do
        pid=$(cat "$STATE/pids/$name")
        for _ in $(seq 100); do
            [[ -s "$STATE/ready/$name" ]] || ! kill -0 "$pid" 2>/dev/null && break
            sleep 0.05
        done
        if [[ -s "$STATE/ready/$name" ]]; then
            printf '%s\t%s\t%s\t%s\n' "$name" "$addr" "$tcp" "$udp" >>"$STATE/targets.tsv"
        else
            kill "$pid" 2>/dev/null || true
            rm -f "$STATE/pids/$name" "$STATE/hits/$name"
            skipped+=("$name")
        fi
    done <"$STATE/targets.pending"
    rm -f "$STATE/targets.pending"
    ((${#skipped[@]} == 0)) || log "port in use or address missing, no stand-in: ${skipped[*]}"
}

host_addresses() {  # the host's own addresses, except loopback and our veth link
    ip -o addr show | awk '$2 != "lo" && $2 != "'"$VETH_HOST"'" && ($3 == "inet" || ($3 == "inet6" && $0 !~ / scope link/)) {sub(/\/.*/, "", $4); print $4}'
}

wait_answering() {  # every TCP target answers a connect from the host, and counted it
    "$PYTHON" - "$STATE" <<'EOF'
import pathlib, socket, sys, time
state = pathlib.Path(sys.argv[1])
deadline = time.monotonic() + 10
for line in (state / "targets.tsv").read_text().splitlines():
    name, addr, tcp, _ = line.split("\t")
    ports = [int(p) for p in tcp.split(",") if p]
    for port in ports:
        while True:
            try:
                socket.create_connection((addr, port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    sys.exit(f"standins: {name} {addr}:{port} does not answer: {exc}")
                time.sleep(0.05)
    # the listener accepts asynchronously: wait until it has counted our connects
    while int((state / "hits" / name).read_text() or 0) < len(ports):
        if time.monotonic() > deadline:
            sys.exit(f"standins: {name} did not count its readiness connects")
        time.sleep(0.02)
EOF
}

up() {
    down 2>/dev/null
    mkdir -p "$STATE"/{hits,pids,ready,logs}
    : >"$STATE/targets.tsv"
    ip netns add "$NS"
    ip link add "$VETH_HOST" type veth peer name "$VETH_NS"
    ip link set "$VETH_NS" netns "$NS"
    ip addr add "$LINK4_HOST/30" dev "$VETH_HOST"
    ip -6 addr add "$LINK6_HOST/64" dev "$VETH_HOST" nodad
    ip link set "$VETH_HOST" up
    ip netns exec "$NS" ip link set lo up
    ip netns exec "$NS" ip addr add "$LINK4_NS/30" dev "$VETH_NS"
    ip netns exec "$NS" ip -6 addr add "$LINK6_NS/64" dev "$VETH_NS" nodad
    ip netns exec "$NS" ip link set "$VETH_NS" up
    ip netns exec "$NS" ip route add default via "$LINK4_HOST"
    ip netns exec "$NS" ip -6 route add default via "$LINK6_HOST"
    local entry name addr
    for entry in "${STANDINS[@]}"; do
        read -r name addr <<<"$entry"
        if [[ "$addr" == *:* ]]; then
            ip netns exec "$NS" ip -6 addr add "$addr/128" dev lo nodad
            ip -6 route replace "$addr/128" via "$LINK6_NS" dev "$VETH_HOST"
        else
            ip netns exec "$NS" ip addr add "$addr/32" dev lo
            ip route replace "$addr/32" via "$LINK4_NS" dev "$VETH_HOST"
        fi
        start_listener "$name" "$NS" "$addr" "$NS_TCP" "$NS_UDP"
    done
    local port
    for addr in $(host_addresses); do
        for port in "${HOST_PORTS[@]}"; do
            name="host@$addr:$port"
            [[ "$addr" == *:* ]] && name="host@[$addr]:$port"
            start_listener "$name" "" "$addr" "$port" ""
        done
    done
    wait_bound
    for entry in "${STANDINS[@]}"; do
        read -r name _ <<<"$entry"
        [[ -f "$STATE/pids/$name" ]] || { log "$name: listener failed (see $STATE/logs/$name)"; exit 1; }
    done
    wait_answering
    reset
    log "up: $(wc -l <"$STATE/targets.tsv") listeners"
}

down() {
    local pidfile
    if [[ -d "$STATE/pids" ]]; then
        for pidfile in "$STATE"/pids/*; do
            if [[ -f "$pidfile" ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
        done
    fi
    local entry name addr
    for entry in "${STANDINS[@]}"; do
        read -r name addr <<<"$entry"
        if [[ "$addr" == *:* ]]; then
            ip -6 route del "$addr/128" via "$LINK6_NS" 2>/dev/null || true
        else
            ip route del "$addr/32" via "$LINK4_NS" 2>/dev/null || true
        fi
    done
    ip link del "$VETH_HOST" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$STATE"
}

hits() {
    local f sep=""
    printf '{'
    for f in "$STATE"/hits/*; do
        [[ -f "$f" ]] || continue
        printf '%s"%s": %d' "$sep" "$(basename "$f")" "$(cat "$f")"
        sep=", "
    done
    printf '}\n'
}

reset() {
    local f
    for f in "$STATE"/hits/*; do
        [[ -f "$f" ]] && echo 0 >"$f"
    done
    return 0
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    hits) hits ;;
    reset) reset ;;
    list) cat "$STATE/targets.tsv" ;;
    *) echo "usage: $0 {up|down|hits|reset|list}" >&2; exit 2 ;;
esac
