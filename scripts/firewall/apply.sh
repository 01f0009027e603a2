#!/usr/bin/env bash
# Apply Airlock's network isolation rules (IPv4 and IPv6). Idempotent and atomic per
# chain: each of our chains is rebuilt in one iptables-restore transaction, so applying
# twice gives the same rules and there is no moment without them. Refused traffic goes
# to AIRLOCK-REJECT (TCP reset, else ICMP prohibited): jobs fail at once, never hang.
#   AIRLOCK-EGRESS (IPv4: jumped first from DOCKER-USER; IPv6: first from FORWARD)
#     jobs on the workspace network may open connections to the egress proxy's
#     ip:port and nothing else: not the backend subnet, not the metadata services
#     (169.254/16, 168.63.129.16, 100.100.100.200, fd00:ec2::254), not the private
#     ranges, not each other, and no IPv6 at all. The proxy's own network may not
#     reach the backend or the metadata services.
#   AIRLOCK-INPUT (jumped first from INPUT): DOCKER-USER sees only forwarded traffic,
#     so a job could reach services on the host's own addresses through the bridge
#     gateway; everything from the workspace and egress bridges to the host is refused.
# Also sets net.bridge.bridge-nf-call-ip{,6}tables=1: without it, traffic between
# containers on one bridge never reaches iptables (job to job would be open).
# Settings: see lib.sh. Check with verify.sh; undo with remove.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

ensure_bridge_netfilter() {
    local key
    for key in bridge-nf-call-iptables bridge-nf-call-ip6tables; do
        if [[ ! -e /proc/sys/net/bridge/$key ]]; then
            if command -v modprobe >/dev/null; then modprobe br_netfilter || true; fi
        fi
        [[ -e /proc/sys/net/bridge/$key ]] || { log "no /proc/sys/net/bridge/$key (br_netfilter)"; exit 1; }
        echo 1 >"/proc/sys/net/bridge/$key"
    done
}

load_chain() {  # tool chain generator: replace the chain's rules in one transaction
    local tool=$1 chain=$2 gen=$3 line
    {
        echo "*filter"
        echo ":$chain - [0:0]"
        while read -r line; do
            echo "-A $chain $(rule_args "$line")"
        done < <("$gen")
        echo "COMMIT"
    } | "$tool-restore" --noflush
}

hook_first() {  # tool hook chain: our jump is the hook chain's first rule, exactly once
    local tool=$1 hook=$2 chain=$3
    [[ "$("$tool" -S "$hook" | sed -n 2p)" == "-A $hook -j $chain" ]] \
        && [[ "$("$tool" -S "$hook" | grep -cx -- "-A $hook -j $chain")" == 1 ]] && return 0
    while "$tool" -D "$hook" -j "$chain" 2>/dev/null; do :; done
    "$tool" -I "$hook" 1 -j "$chain"
}

iptables -S DOCKER-USER >/dev/null 2>&1 || { log "no DOCKER-USER chain: start dockerd first"; exit 1; }
ensure_bridge_netfilter
for entry in "${CHAINS[@]}"; do
    read -r tool chain hook gen <<<"$entry"
    load_chain "$tool" "$chain" "$gen"
    [[ "$hook" == - ]] || hook_first "$tool" "$hook" "$chain"
done
log "applied (workspace $WS_SUBNET via $WS_BRIDGE, proxy $PROXY_IP:$PROXY_PORT)"
