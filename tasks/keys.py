"""API keys, pure: how a key looks, how it is hashed, and what it may do.

A key is ``al_<id>_<secret>``: ``id`` (12 hex) names it in lists and revocations and finds its
row; ``secret`` is 32 random bytes in URL-safe base64. Only a keyed hash of the whole key is
stored: HMAC-SHA-256 with the server's secret (``AIRLOCK_API_KEY_SECRET``). Keys are long random
tokens, so a slow password hash would only cost every request its CPU; without the server's
secret, a copy of the table is no use. Hashes are compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

PREFIX = "al"
_KEY = re.compile(r"^al_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(enum.StrEnum):
    """What a key may do, each including the one before: read its tenant's jobs; also submit
    and cancel them; also everything of every tenant (``admin``)."""

    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    token: str  # shown once, never stored


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    return NewKey(key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}")


def key_id_of(token: str) -> str | None:
    """The id in a well-formed key, else None (nothing looked up for a malformed one)."""
    found = _KEY.match(token)
    return found.group(1) if found else None


def key_hash(server_secret: bytes, token: str) -> str:
    return hmac.new(server_secret, token.encode(), hashlib.sha256).hexdigest()


def matches(server_secret: bytes, token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(server_secret, token), stored_hash)


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    tenant: str
    scope: Scope
    hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def refusal(self, now: datetime) -> str | None:
        """Why this key may not be used now (revoked, expired), or None."""
        if self.revoked_at is not None:
            return "the key was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "the key has expired"
        return None
