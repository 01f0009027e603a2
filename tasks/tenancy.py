"""Tenants and their API keys, in PostgreSQL (the keys' pure rules are tasks/keys.py)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from base.errors import AirlockError, JobSpecError
from config.sections import Tenancy
from tasks import quotas
from tasks.egress import check_domains
from tasks.keys import KeyRow, NewKey, Scope, key_hash, new_key
from tasks.models import ApiKey, Tenant
from tasks.store import connected

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class TenantError(AirlockError):
    """No such tenant, or no such key."""


def check_tenant_name(name: str) -> str:
    if not TENANT_NAME.match(name):
        raise JobSpecError("tenant", f"{name[:80]!r} is not a tenant name: lower-case letters,"
                                     " digits and dashes, 64 at most, starting with a letter or digit")
    return name


class TenantStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str) -> bool:
        """Add a tenant; False when it exists already."""
        stmt = pg_insert(Tenant).values(name=check_tenant_name(name)).on_conflict_do_nothing()
        with connected(self.engine.begin) as conn:
            created = conn.execute(stmt.returning(Tenant.name)).first()
        return created is not None

    def names(self) -> list[tuple[str, datetime]]:
        with connected(self.engine.connect) as conn:
            rows = conn.execute(sa.select(Tenant.name, Tenant.created_at).order_by(Tenant.name))
            return [(r.name, r.created_at) for r in rows]

    def row(self, name: str) -> dict[str, Any] | None:
        """The tenant's row (weight, quotas, max_limits), or None."""
        with connected(self.engine.connect) as conn:
            found = conn.execute(sa.select(Tenant.__table__).where(Tenant.name == name)).first()
        return None if found is None else dict(found._mapping)

    def rows(self) -> list[dict[str, Any]]:
        with connected(self.engine.connect) as conn:
            found = conn.execute(sa.select(Tenant.__table__).order_by(Tenant.name)).all()
        return [dict(r._mapping) for r in found]

    def set_quota(self, name: str, **values: Any) -> bool:
        """Set the tenant's weight, quotas or per-limit maxima (None: back to the default);
        False when there is no such tenant."""
        if "max_limits" in values:
            values["max_limits"] = quotas.check_max_limits(values["max_limits"] or {})
        unknown = set(values) - {"weight", "max_limits", *quotas.QUOTAS}
        if unknown:
            raise TenantError(f"not a quota: {', '.join(sorted(unknown))}")
        if not values:
            return self.exists(name)
        with connected(self.engine.begin) as conn:
            done = conn.execute(sa.update(Tenant).where(Tenant.name == name).values(**values))
        return bool(done.rowcount)

    def set_egress(self, name: str, domains: Iterable[str]) -> bool:
        """Replace the tenant's own egress endpoints (none: cleared); False when there is
        no such tenant. Workers pass the change to the proxy within egress_refresh_s."""
        checked = list(check_domains(domains))
        with connected(self.engine.begin) as conn:
            done = conn.execute(sa.update(Tenant).where(Tenant.name == name)
                                .values(egress_domains=checked))
        return bool(done.rowcount)

    def egress_domains(self, name: str) -> tuple[str, ...]:
        """The tenant's own endpoints (none for an unknown tenant)."""
        with connected(self.engine.connect) as conn:
            found = conn.execute(sa.select(Tenant.egress_domains)
                                 .where(Tenant.name == name)).scalar()
        return tuple(found or ())

    def every_egress(self) -> dict[str, tuple[str, ...]]:
        """Each tenant with endpoints of its own, and those."""
        with connected(self.engine.connect) as conn:
            rows = conn.execute(sa.select(Tenant.name, Tenant.egress_domains)
                                .where(sa.func.cardinality(Tenant.egress_domains) > 0)).all()
        return {r.name: tuple(r.egress_domains) for r in rows}

    def exists(self, name: str) -> bool:
        with connected(self.engine.connect) as conn:
            return conn.execute(sa.select(Tenant.name).where(Tenant.name == name)).first() is not None

    def create_key(self, tenant: str, scope: Scope, server_secret: bytes,
                   expires_at: datetime | None = None) -> NewKey:
        """A new key of ``tenant``: its hash is stored, the key itself returned once."""
        key = new_key()
        row = {"key_id": key.key_id, "tenant": tenant, "scope": str(scope),
               "hash": key_hash(server_secret, key.token), "expires_at": expires_at}
        try:
            with connected(self.engine.begin) as conn:
                conn.execute(sa.insert(ApiKey).values(**row))
        except sa_exc.IntegrityError as exc:
            raise TenantError(f"no tenant {tenant!r}: create it first (airlock tenant create)") from exc
        return key

    def revoke_key(self, key_id: str) -> bool:
        with connected(self.engine.begin) as conn:
            done = conn.execute(sa.update(ApiKey).where(
                ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)
            ).values(revoked_at=sa.func.now()))
        return done.rowcount == 1

    def key(self, key_id: str) -> KeyRow | None:
        with connected(self.engine.connect) as conn:
            row = conn.execute(sa.select(ApiKey.__table__).where(ApiKey.key_id == key_id)).first()
        if row is None:
            return None
        return KeyRow(row.key_id, row.tenant, Scope(row.scope), row.hash, row.created_at,
                      row.expires_at, row.revoked_at)

    def keys(self, tenant: str | None = None) -> list[KeyRow]:
        query = sa.select(ApiKey.__table__).order_by(ApiKey.tenant, ApiKey.created_at)
        if tenant is not None:
            query = query.where(ApiKey.tenant == tenant)
        with connected(self.engine.connect) as conn:
            rows = conn.execute(query).all()
        return [KeyRow(r.key_id, r.tenant, Scope(r.scope), r.hash, r.created_at, r.expires_at,
                       r.revoked_at) for r in rows]


class Quotas:
    """Tenants' quotas as a submitting client needs them, each read from PostgreSQL at most
    once per ``ttl_s`` (a change takes effect within it)."""

    def __init__(self, tenants: TenantStore, defaults: Tenancy, ttl_s: float = 5.0) -> None:
        self.tenants, self.defaults, self.ttl_s = tenants, defaults, ttl_s
        self._known: dict[str, tuple[quotas.Quota, float]] = {}
        self._lock = threading.Lock()

    def of(self, tenant: str) -> quotas.Quota:
        now = time.monotonic()
        with self._lock:
            found = self._known.get(tenant)
        if found is not None and found[1] > now:
            return found[0]
        row = self.tenants.row(tenant)
        if row is None:
            raise JobSpecError("tenant", f"no tenant {tenant!r}")
        quota = quotas.effective(tenant, row, self.defaults)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[tenant] = (quota, now + self.ttl_s)
        return quota
