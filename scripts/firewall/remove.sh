#!/usr/bin/env bash
# Remove Airlock's network isolation rules: the jumps to AIRLOCK-EGRESS and
# AIRLOCK-INPUT, then our chains (those two and AIRLOCK-REJECT), IPv4 and IPv6.
# Idempotent; touches nothing else (Docker's chains and the bridge-netfilter sysctls
# stay as they are).
# After this, jobs on the workspace network cannot reach even the proxy: Docker's own
# enable_icc=false and internal-network rules still drop their traffic.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

for ((i = ${#CHAINS[@]} - 1; i >= 0; i--)); do
    read -r tool chain hook _ <<<"${CHAINS[i]}"
    if [[ "$hook" != - ]]; then
        while "$tool" -D "$hook" -j "$chain" 2>/dev/null; do :; done
    fi
    if "$tool" -S "$chain" >/dev/null 2>&1; then
        "$tool" -F "$chain"
        "$tool" -X "$chain"
    fi
done
log "removed"
