#!/usr/bin/python3
"""Squid's helpers for per-tenant egress, reading the registry the worker writes (read-only
here; workers/proxy_registry.py is the writer, and the format's definition).

    registry/creds/<user>      "<sha256 hex of the token> <tenant> <expiry, epoch seconds>"
    registry/tenants/<tenant>  the tenant's own domains, one a line

``auth``: Squid's basic-auth helper: "user password" (URL-escaped) in, OK or ERR out. The
credential must exist (the worker removes it when the attempt ends), not be expired, and its
hash match (constant-time compare). ``acl``: an external ACL helper: "user host" in, OK when
the host is on the common allowlist (AIRLOCK_EGRESS_ALLOWLIST) or the user's tenant's list,
else ERR with a message naming the tenant and the host (the error page's %o). A leading dot
also allows subdomains. Every line is answered from the files as they are now: no cache.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
import time
from urllib.parse import unquote

ROOT = os.environ.get("AIRLOCK_EGRESS_REGISTRY", "/etc/airlock/egress-registry")
USER = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")
TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def credential(user: str) -> tuple[str, str, float] | None:
    if not USER.match(user):
        return None
    try:
        with open(os.path.join(ROOT, "creds", user), encoding="ascii") as f:
            digest, tenant, expiry = f.read().split()
        return digest, tenant, float(expiry)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def authenticate(user: str, password: str) -> bool:
    found = credential(user)
    if found is None or found[2] < time.time():
        return False
    offered = hashlib.sha256(password.encode()).hexdigest()
    return hmac.compare_digest(offered, found[0])


def listed(host: str, domains: list[str]) -> bool:
    for entry in domains:
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def tenant_domains(tenant: str) -> list[str]:
    if not TENANT.match(tenant):
        return []
    try:
        with open(os.path.join(ROOT, "tenants", tenant), encoding="ascii") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return []


def common() -> list[str]:
    raw = os.environ.get("AIRLOCK_EGRESS_ALLOWLIST", "")
    return [d.strip() for d in raw.split(",") if d.strip()]


def decide(user: str, host: str) -> str:
    host = host.lower().rstrip(".")
    found = credential(user)
    if found is None or found[2] < time.time():
        return 'ERR message="the proxy credential is unknown or revoked (the job ended?)"'
    tenant, fleet, own = found[1], common(), tenant_domains(found[1])
    if listed(host, fleet) or listed(host, own):
        return "OK"
    shown = re.sub(r"[^a-z0-9.:\[\]_-]", "?", host)[:255]
    allowed = " ".join(fleet + own)
    allowed = allowed if len(allowed) <= 2000 else allowed[:2000] + " ..."
    return (f'ERR message="{shown} is not on the egress allowlist of tenant {tenant}.'
            f' Allowed: {allowed} (a leading dot also allows subdomains; the endpoints of a'
            ' tenant: airlock tenant set-egress)."')


def answer(mode: str, line: str) -> str:
    parts = line.split()
    if len(parts) < 2:
        return "ERR"
    first, second = unquote(parts[0]), unquote(parts[1])
    if mode == "auth":
        return "OK" if authenticate(first, second) else "ERR"
    return decide(first, second)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("auth", "acl"):
        sys.exit("usage: registry_helper.py auth|acl")
    for line in sys.stdin:
        sys.stdout.write(answer(mode, line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
