"""Who is asking: a Bearer key (tasks/keys.py), its tenant and its scope.

A missing, malformed, unknown, revoked or expired key is 401 (the same answer for each, so a
prober learns nothing); a key without the scope a route needs is 403. The key itself is never
logged, stored or echoed: only its id, once it has been proved."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from airlock.api.problems import Problem
from tasks.keys import KeyRow, Scope, key_id_of, matches
from tasks.tenancy import TenantStore

CACHED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scope: Scope
    key_id: str

    @property
    def sees(self) -> str | None:
        """The tenant whose jobs this key sees; None: every tenant's (admin)."""
        return None if self.scope is Scope.ADMIN else self.tenant


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail,
                   headers={"WWW-Authenticate": 'Bearer realm="airlock"'})


class KeyRows:
    """Key rows by id, each read from PostgreSQL at most once per ``ttl_s`` (a known key's row
    only: an unknown id is asked every time). The token is still proved against the row's
    hash on every request; a revocation or expiry is seen within ``ttl_s``."""

    def __init__(self, tenants: TenantStore, ttl_s: float) -> None:
        self.tenants, self.ttl_s = tenants, ttl_s
        self._rows: dict[str, tuple[KeyRow, float]] = {}
        self._lock = threading.Lock()

    def cached(self, key_id: str | None) -> KeyRow | None:
        """The row if it is at hand (no I/O): the caller may then prove the key on its loop."""
        with self._lock:
            found = self._rows.get(key_id) if key_id is not None else None
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def get(self, key_id: str) -> KeyRow | None:
        now = time.monotonic()
        row = self.cached(key_id)
        if row is not None:
            return row
        row = self.tenants.key(key_id)
        if row is not None and self.ttl_s > 0:
            with self._lock:
                if len(self._rows) >= CACHED_KEYS:
                    self._rows.clear()
                self._rows[key_id] = (row, now + self.ttl_s)
        return row


def bearer(request: Request) -> str | None:
    kind, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


def authenticate(request: Request, keys: KeyRows, server_secret: bytes,
                 needed: Scope) -> Principal:
    token = bearer(request)
    if token is None:
        raise unauthorized("an API key is needed: Authorization: Bearer <key>")
    key_id = key_id_of(token)
    row = keys.get(key_id) if key_id is not None else None
    if row is None or not matches(server_secret, token, row.hash):
        raise unauthorized("the API key is not valid")
    refusal = row.refusal(datetime.now(UTC))
    if refusal is not None:
        raise unauthorized(refusal)
    if not row.scope.allows(needed):
        raise Problem(403, "forbidden", "Forbidden",
                      f"this key's scope is {row.scope}; this needs {needed}")
    return Principal(row.tenant, row.scope, row.key_id)
