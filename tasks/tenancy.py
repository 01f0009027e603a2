"""Tenants and their API keys, in PostgreSQL (the keys' pure rules are tasks/keys.py)."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from base.errors import AirlockError, JobSpecError
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
