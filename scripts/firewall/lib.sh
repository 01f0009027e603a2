# shellcheck shell=bash
# Shared by apply.sh, verify.sh and remove.sh: settings and the one list of rules.
# Settings (env, with defaults matching workers/networks.py):
#   AIRLOCK_WORKSPACE_SUBNET 172.29.0.0/24   AIRLOCK_WORKSPACE_BRIDGE airlock-ws0
#   AIRLOCK_BACKEND_SUBNET   172.28.0.0/24
#   AIRLOCK_EGRESS_SUBNET    172.30.0.0/24   AIRLOCK_EGRESS_BRIDGE    airlock-eg0
#   AIRLOCK_PROXY_IP         172.29.0.2      AIRLOCK_PROXY_PORT       3128
# Blocked traffic is REJECTed, not silently dropped, so a job's connect fails at once
# instead of hanging until a timeout: through AIRLOCK-REJECT, which answers TCP with a
# reset and everything else with ICMP "administratively prohibited" (ICMP errors are
# rate-limited per destination, about 1/s, so TCP gets resets, which are not).

WS_SUBNET="${AIRLOCK_WORKSPACE_SUBNET:-172.29.0.0/24}"
WS_BRIDGE="${AIRLOCK_WORKSPACE_BRIDGE:-airlock-ws0}"
BACKEND_SUBNET="${AIRLOCK_BACKEND_SUBNET:-172.28.0.0/24}"
EGRESS_SUBNET="${AIRLOCK_EGRESS_SUBNET:-172.30.0.0/24}"
EGRESS_BRIDGE="${AIRLOCK_EGRESS_BRIDGE:-airlock-eg0}"
PROXY_IP="${AIRLOCK_PROXY_IP:-172.29.0.2}"
PROXY_PORT="${AIRLOCK_PROXY_PORT:-3128}"

FWD_CHAIN=AIRLOCK-EGRESS   # jumped from DOCKER-USER (IPv4) and from FORWARD (IPv6)
IN_CHAIN=AIRLOCK-INPUT     # jumped from INPUT: the host's own addresses
REJECT_CHAIN=AIRLOCK-REJECT
REJECT4="-j $REJECT_CHAIN"
REJECT6="-j $REJECT_CHAIN"

# Each rule: "<comment> <iptables match...>"; the comment names it in verify's output.
# Order matters: the first match wins.
rules_v4_reject() {
    echo "reject-tcp -p tcp -j REJECT --reject-with tcp-reset"
    echo "reject-other -j REJECT --reject-with icmp-admin-prohibited"
}

rules_v6_reject() {
    echo "reject-tcp-v6 -p tcp -j REJECT --reject-with tcp-reset"
    echo "reject-other-v6 -j REJECT --reject-with icmp6-adm-prohibited"
}

rules_v4_forward() {
    local ws="-s $WS_SUBNET" eg="-s $EGRESS_SUBNET" net
    echo "established -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    echo "ws-to-proxy $ws -d $PROXY_IP/32 -p tcp -m tcp --dport $PROXY_PORT -j ACCEPT"
    echo "ws-to-backend $ws -d $BACKEND_SUBNET $REJECT4"
    for net in 169.254.0.0/16 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 \
               168.63.129.16/32 100.100.100.200/32; do
        echo "ws-to-${net//\//_} $ws -d $net $REJECT4"
    done
    echo "ws-anything-else $ws $REJECT4"
    echo "ws-bridge-anything-else -i $WS_BRIDGE $REJECT4"
    echo "into-ws-bridge -o $WS_BRIDGE $REJECT4"
    # The proxy's own way out: never the backend nor the metadata services.
    # (Not all private ranges: the host's DNS resolver often lives in one.)
    echo "egress-to-backend $eg -d $BACKEND_SUBNET $REJECT4"
    for net in 169.254.169.254/32 169.254.170.2/32 100.100.100.200/32; do
        echo "egress-to-${net//\//_} $eg -d $net $REJECT4"
    done
}

rules_v4_input() {
    echo "ws-bridge-to-host -i $WS_BRIDGE $REJECT4"
    echo "ws-to-host -s $WS_SUBNET ! -i lo $REJECT4"
    echo "egress-bridge-to-host -i $EGRESS_BRIDGE $REJECT4"
    echo "egress-to-host -s $EGRESS_SUBNET ! -i lo $REJECT4"
}

rules_v6_forward() {
    local net
    for net in fd00:ec2::254/128 fe80::/10 fc00::/7; do
        echo "ws-to-${net//[:\/]/_} -i $WS_BRIDGE -d $net $REJECT6"
    done
    echo "ws-anything-else-v6 -i $WS_BRIDGE $REJECT6"
    echo "into-ws-bridge-v6 -o $WS_BRIDGE $REJECT6"
    echo "egress-to-metadata-v6 -i $EGRESS_BRIDGE -d fd00:ec2::254/128 $REJECT6"
}

rules_v6_input() {
    echo "ws-bridge-to-host-v6 -i $WS_BRIDGE $REJECT6"
    echo "egress-bridge-to-host-v6 -i $EGRESS_BRIDGE $REJECT6"
}

# "<tool> <chain> <hook chain> <rule generator>" for every chain we own, in the order
# they are built ("-": no hook); removed in reverse order.
# shellcheck disable=SC2034  # used by the scripts that source this file
CHAINS=(
    "iptables $REJECT_CHAIN - rules_v4_reject"
    "ip6tables $REJECT_CHAIN - rules_v6_reject"
    "iptables $FWD_CHAIN DOCKER-USER rules_v4_forward"
    "iptables $IN_CHAIN INPUT rules_v4_input"
    "ip6tables $FWD_CHAIN FORWARD rules_v6_forward"
    "ip6tables $IN_CHAIN INPUT rules_v6_input"
)

# A rule line as iptables arguments, with its comment attached.
rule_args() {  # "<comment> <match...>" -> prints "<match...> -m comment --comment airlock:<comment>"
    local comment=${1%% *} spec=${1#* }
    echo "$spec -m comment --comment airlock:$comment"
}

log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

require_root() {
    [[ $EUID -eq 0 ]] || { log "must run as root"; exit 1; }
}
