"""Tenants' job secrets: sealed at rest, opened only for the start of a job that names them.

``airlock secret set TENANT NAME`` seals a value with AES-256-GCM (``cryptography``) under the
fleet's key (``AIRLOCK_SECRETS_KEY``); the row holds the nonce and the ciphertext, never the
value. The associated data is the tenant and the name: a ciphertext copied to another row does
not open. A job names the secrets it wants (``secrets: ["ANTHROPIC_API_KEY"]``); its worker
opens them as the job starts and puts them into the launcher's frame, their one way into the
job (tasks/planning.payload_for). Nothing else holds a value: not the spec, the record, the
logs, the live stream, Flower or the metrics.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from base.errors import AirlockError, DatabaseUnavailable
from config.settings import Settings
from tasks.models import Secret

NONCE_BYTES = 12


class SecretError(AirlockError):
    """A secret could not be stored or opened."""


def _aad(tenant: str, name: str) -> bytes:
    return f"airlock-secret\0{tenant}\0{name}".encode()


class SecretBox:
    """AES-256-GCM under one key; ``key_id`` names the key without revealing it."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"airlock-secrets-key\0" + key).hexdigest()[:16]

    @classmethod
    def from_settings(cls, s: Settings) -> SecretBox:
        if s.secrets.key is None:
            raise SecretError("no secrets key on this host (AIRLOCK_SECRETS_KEY): secrets can"
                              " be neither stored nor opened")
        return cls(base64.b64decode(s.secrets.key.get_secret_value()))

    def seal(self, tenant: str, name: str, value: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, value, _aad(tenant, name))

    def open(self, tenant: str, name: str, nonce: bytes, ciphertext: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, _aad(tenant, name))
        except InvalidTag as exc:
            raise SecretError(f"secret {name} of tenant {tenant!r} does not open with this"
                              " host's key") from exc


def checked_value(raw: bytes, cap: int) -> str:
    """A secret's value as a job's environment can hold it: UTF-8 text without NUL, at most
    ``cap`` bytes, not empty. The message never quotes the value."""
    if not raw:
        raise SecretError("the value is empty")
    if len(raw) > cap:
        raise SecretError(f"the value is {len(raw)} bytes, over the cap of {cap}")
    if b"\0" in raw:
        raise SecretError("the value contains a NUL byte (an environment variable cannot)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("the value is not UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    updated_at: datetime
    key_id: str


class SecretStore:
    """The secrets table. Values go in and come out only through ``box``."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc.orig or exc}") from exc

    def set(self, tenant: str, name: str, value: str) -> bool:
        """Store (or replace) a tenant's secret; True when it is new."""
        nonce, ciphertext = self.box.seal(tenant, name, value.encode())
        row = {"tenant": tenant, "name": name, "key_id": self.box.key_id, "nonce": nonce,
               "ciphertext": ciphertext}
        insert = pg_insert(Secret).values(row)
        stmt: Any = insert.on_conflict_do_update(
            index_elements=[Secret.tenant, Secret.name],
            set_={"key_id": insert.excluded.key_id, "nonce": insert.excluded.nonce,
                  "ciphertext": insert.excluded.ciphertext, "updated_at": sa.func.now()},
        ).returning(sa.literal_column("xmax = 0"))  # true for a new row
        try:
            with self._tx() as conn:
                return bool(conn.execute(stmt).scalar_one())
        except sa_exc.IntegrityError as exc:  # the tenants table does not have it
            raise SecretError(f"no tenant {tenant!r}") from exc

    def listed(self, tenant: str) -> list[SecretInfo]:
        query = (sa.select(Secret.name, Secret.updated_at, Secret.key_id)
                 .where(Secret.tenant == tenant).order_by(Secret.name))
        with self._tx() as conn:
            return [SecretInfo(*row) for row in conn.execute(query)]

    def delete(self, tenant: str, name: str) -> bool:
        stmt = sa.delete(Secret).where(Secret.tenant == tenant, Secret.name == name)
        with self._tx() as conn:
            return bool(conn.execute(stmt).rowcount)

    def values(self, tenant: str, names: Iterable[str]) -> dict[str, str]:
        """The named secrets of ``tenant``, opened; SecretError naming any that is not set."""
        wanted = list(names)
        if not wanted:
            return {}
        query = (sa.select(Secret.name, Secret.nonce, Secret.ciphertext)
                 .where(Secret.tenant == tenant, Secret.name.in_(wanted)))
        with self._tx() as conn:
            rows = {row.name: row for row in conn.execute(query)}
        missing = [name for name in wanted if name not in rows]
        if missing:
            raise SecretError(f"secrets not set for tenant {tenant!r}: {', '.join(missing)}"
                              f" (airlock secret set {tenant} NAME)")
        return {name: self.box.open(tenant, name, bytes(rows[name].nonce),
                                    bytes(rows[name].ciphertext)).decode()
                for name in wanted}
