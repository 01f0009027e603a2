#!/usr/bin/env bash
# Check that Airlock's network isolation rules (apply.sh) are in place, unchanged and
# in order, and first in their hook chains. Changes nothing. Exits 1 and names every
# missing, changed or extra rule; exits 0 when all is well. Settings: see lib.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

problems=0
fail() { log "FAIL: $*"; problems=$((problems + 1)); }

check_chain() {  # tool chain hook generator
    local tool=$1 chain=$2 hook=$3 gen=$4 line args expected=() actual=()
    if ! "$tool" -S "$chain" >/dev/null 2>&1; then
        fail "$tool chain $chain is missing"
        return
    fi
    [[ "$hook" == - || "$("$tool" -S "$hook" | sed -n 2p)" == "-A $hook -j $chain" ]] \
        || fail "$tool: the jump to $chain is missing or not the first rule of $hook"
    while read -r line; do
        expected+=("airlock:${line%% *}")
        read -ra args <<<"$(rule_args "$line")"
        "$tool" -C "$chain" "${args[@]}" 2>/dev/null \
            || fail "$tool $chain: missing rule airlock:${line%% *} ($(rule_args "$line"))"
    done < <("$gen")
    mapfile -t actual < <("$tool" -S "$chain" | sed -n 's/.*--comment "\{0,1\}\(airlock:[^ "]*\).*/\1/p; /--comment/!{/^-A /s/.*/(uncommented rule)/p}')
    [[ "${actual[*]}" == "${expected[*]}" ]] \
        || fail "$tool $chain: rules differ in order or number: have [${actual[*]}]"
}

for key in bridge-nf-call-iptables bridge-nf-call-ip6tables; do
    [[ "$(cat "/proc/sys/net/bridge/$key" 2>/dev/null)" == 1 ]] \
        || fail "net.bridge.$key is not 1: traffic inside a bridge bypasses iptables"
done
for entry in "${CHAINS[@]}"; do
    read -r tool chain hook gen <<<"$entry"
    check_chain "$tool" "$chain" "$hook" "$gen"
done
if ((problems)); then
    log "$problems problem(s): run scripts/firewall/apply.sh"
    exit 1
fi
log "ok: all rules present"
