#!/usr/bin/env bash
# Start Squid as Airlock's egress proxy. Everything is generated here, at start, into
# the tmpfs /run/squid: squid.conf from the environment, the error pages, and a fresh
# TLS-interception CA whose key never leaves this container's memory-backed /run.
# The CA certificate (not the key) is published to /etc/airlock/egress-ca/ca.pem, a
# volume that job containers mount read-only and trust (SSL_CERT_FILE, PIP_CERT, ...).
# Env: AIRLOCK_EGRESS_ALLOWLIST  comma-separated domains; ".example.org" also allows
#                                its subdomains, "example.org" only that exact name
#      AIRLOCK_PROXY_PORT        listening port (default 3128)
#      AIRLOCK_UPSTREAM_CA       optional PEM file of extra CAs trusted for upstream TLS
#      AIRLOCK_EGRESS_REGISTRY   optional: the worker's registry of proxy credentials and
#                                tenants' endpoints (mounted read-only). Set: every request
#                                needs a live job's credential, and may reach the allowlist
#                                plus that job's tenant's endpoints (registry_helper.py).
#                                Unset: the allowlist alone, no credentials (as before).
set -euo pipefail

ALLOWLIST="${AIRLOCK_EGRESS_ALLOWLIST:-pypi.org,files.pythonhosted.org,registry.npmjs.org,api.anthropic.com}"
PORT="${AIRLOCK_PROXY_PORT:-3128}"
UPSTREAM_CA="${AIRLOCK_UPSTREAM_CA:-}"
REGISTRY="${AIRLOCK_EGRESS_REGISTRY:-}"
HELPER="/usr/bin/python3 /usr/local/lib/airlock/registry_helper.py"
RUN_DIR=/run/squid
SPOOL=/var/spool/squid
PUBLISHED=/etc/airlock/egress-ca/ca.pem
# Registries: reads only (no uploads, no publishing), whatever the allowlist says.
REGISTRIES=".pypi.org .pythonhosted.org .npmjs.org .npmjs.com .yarnpkg.com"

die() { echo "airlock-proxy: $*" >&2; exit 1; }

domains=()
IFS=',' read -ra entries <<<"$ALLOWLIST"
for entry in "${entries[@]}"; do
    entry="${entry//[[:space:]]/}"
    [[ -z "$entry" ]] && continue
    [[ "$entry" =~ ^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}$ ]] \
        || die "AIRLOCK_EGRESS_ALLOWLIST: '$entry' is not a lower-case domain name"
    domains+=("$entry")
done
((${#domains[@]})) || die "AIRLOCK_EGRESS_ALLOWLIST is empty"
listed="${domains[*]}"

mkdir -p "$RUN_DIR/errors"
openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 825 \
    -subj "/O=Airlock/CN=Airlock egress proxy CA $(hostname) $(date -u +%FT%TZ)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$RUN_DIR/ca.key" -out "$RUN_DIR/ca.pem" 2>/dev/null
chmod 0600 "$RUN_DIR/ca.key"
cp "$RUN_DIR/ca.pem" "$PUBLISHED.tmp" && mv -f "$PUBLISHED.tmp" "$PUBLISHED"
rm -rf "$SPOOL/ssl_db"
/usr/lib/squid/security_file_certgen -c -s "$SPOOL/ssl_db" -M 16MB >/dev/null

cp /usr/share/squid-langpack/templates/* "$RUN_DIR/errors/"
page() {  # name text...: plain text, so curl, pip and urllib users can read it
    printf 'Airlock egress proxy refused %%M %%U\n%s\n' "$2" >"$RUN_DIR/errors/$1"
}
page ERR_AIRLOCK_DOMAIN "%H is not on the egress allowlist. Allowed: $listed (a leading dot also allows subdomains)."
page ERR_AIRLOCK_IP_LITERAL "IP addresses are not allowed as destinations; use an allowlisted domain name ($listed)."
page ERR_AIRLOCK_PORT "Only ports 80 and 443 are allowed (CONNECT only to 443)."
page ERR_AIRLOCK_METHOD "Package registries are read-only from Airlock jobs: %M is not allowed to %H."
page ERR_AIRLOCK_PRIVATE "%H resolves to a private, link-local or metadata address."
page ERR_AIRLOCK_TENANT "%o"
page ERR_CACHE_ACCESS_DENIED "Proxy credentials missing or refused: each job has its own, in its proxy variables (HTTP_PROXY ...), valid while it runs."

# Per-tenant egress: who asks (a live job's credential) decides which endpoints beyond the
# common allowlist it may reach. Squid keeps a checked credential for 1 s (with 0 it never
# answered: Squid 5.7, measured); the tenant check (ttl=0, uncached) reads the credential's
# file on every request, so a revoked credential is refused at once either way.
auth_rules=""
domain_rule="http_access deny !allowed"
allow_rule="http_access allow allowed"
if [[ -n "$REGISTRY" ]]; then
    [[ -d "$REGISTRY" ]] || die "AIRLOCK_EGRESS_REGISTRY=$REGISTRY is not a directory"
    auth_rules="auth_param basic program $HELPER auth
auth_param basic children 8 startup=2 idle=1
auth_param basic realm airlock-egress
auth_param basic credentialsttl 1 second
authenticate_ttl 1 second
authenticate_ip_ttl 0 seconds
external_acl_type airlock_tenant ttl=0 negative_ttl=0 children-max=8 children-startup=2 %LOGIN %DST $HELPER acl
acl authenticated proxy_auth REQUIRED
acl tenant_allowed external airlock_tenant
acl tenant_refusal src all
deny_info ERR_AIRLOCK_TENANT tenant_refusal"
    domain_rule="http_access deny !authenticated
http_access deny !tenant_allowed tenant_refusal"
    allow_rule="http_access allow authenticated"
fi

tls_outgoing=""
if [[ -n "$UPSTREAM_CA" ]]; then
    [[ -r "$UPSTREAM_CA" ]] || die "AIRLOCK_UPSTREAM_CA=$UPSTREAM_CA is not readable"
    tls_outgoing="tls_outgoing_options cafile=$UPSTREAM_CA default-ca=on"
fi

cat >"$RUN_DIR/squid.conf" <<CONF
# Generated by /usr/local/bin/airlock-proxy at $(date -u +%FT%TZ); edits are lost.
http_port $PORT ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=$RUN_DIR/ca.pem tls-key=$RUN_DIR/ca.key
sslcrtd_program /usr/lib/squid/security_file_certgen -s $SPOOL/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
$tls_outgoing
pid_filename $RUN_DIR/squid.pid
error_directory $RUN_DIR/errors
access_log stdio:/dev/stdout !localhost
cache_log stdio:/dev/stderr
cache_store_log none
logfile_rotate 0
cache deny all
cache_mem 8 MB
coredump_dir /tmp
pinger_enable off
visible_hostname airlock-egress-proxy
httpd_suppress_version_string on
via off
forwarded_for delete
shutdown_lifetime 1 seconds
connect_timeout 10 seconds

acl allowed dstdomain -n ${domains[*]}
acl ip_literal dstdom_regex -n -i ^[0-9.]+\$ ^0x[0-9a-fx.]+\$ : ^\[
acl safe_ports port 80 443
acl tls_port port 443
acl CONNECT method CONNECT
acl registries dstdomain -n $REGISTRIES
acl writes method POST PUT PATCH DELETE
acl to_private dst 0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.168.0.0/16 198.18.0.0/15 224.0.0.0/3 168.63.129.16 ::/127 ::ffff:0:0/96 64:ff9b::/96 fc00::/7 fe80::/10 ff00::/8

deny_info ERR_AIRLOCK_IP_LITERAL ip_literal
deny_info ERR_AIRLOCK_PORT safe_ports
deny_info ERR_AIRLOCK_PORT tls_port
deny_info ERR_AIRLOCK_DOMAIN allowed
deny_info ERR_AIRLOCK_METHOD writes
deny_info ERR_AIRLOCK_PRIVATE to_private
$auth_rules

http_access deny manager
http_access deny ip_literal
http_access deny !safe_ports
http_access deny CONNECT !tls_port
$domain_rule
http_access deny registries writes
http_access deny to_private
$allow_rule
http_access deny all

# Intercept every allowed tunnel so the rules above also see HTTPS methods and hosts;
# upstream certificates are verified by Squid (an invalid one is refused). A refused
# CONNECT is bumped too, so the client reads the error page above over TLS; except for
# IP literals, where clients reject our certificate first (still refused, at once).
ssl_bump bump all
CONF

exec squid -N -f "$RUN_DIR/squid.conf"
