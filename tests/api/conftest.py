"""A real ``airlock api`` (uvicorn) in front of the session's database, Redis and worker, with
two tenants and keys of each scope."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from tasks.keys import Scope
from tasks.store import make_engine
from tasks.tenancy import TenantStore
from tests.services import ApiProcess

TENANTS = ("tenant-a", "tenant-b")


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    return settings.but(api_key_secret=secrets.token_hex(32))


@pytest.fixture(scope="session")
def api(api_settings: Settings, artifacts: Path) -> Iterator[ApiProcess]:
    proc = ApiProcess(api_settings, artifacts / f"api-{api_settings.fleet}.log").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tenants(api_settings: Settings) -> Iterator[TenantStore]:
    store = TenantStore(make_engine(api_settings.database_url))
    for name in TENANTS:
        store.create(name)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="session")
def keys(api_settings: Settings, tenants: TenantStore) -> dict[str, str]:
    """Keys by "<tenant>:<scope>", plus "revoked" and "expired" (tenant-a's, submit)."""
    assert api_settings.api.key_secret is not None
    secret = api_settings.api.key_secret.get_secret_value().encode()
    out = {f"{t}:{scope}": tenants.create_key(t, scope, secret).token
           for t in TENANTS for scope in Scope}
    revoked = tenants.create_key(TENANTS[0], Scope.SUBMIT, secret)
    tenants.revoke_key(revoked.key_id)
    out["revoked"] = revoked.token
    soon = tenants.create_key(TENANTS[0], Scope.SUBMIT, secret,
                              datetime.now(UTC) + timedelta(seconds=1))
    out["expired"] = soon.token
    return out


def http(api: ApiProcess, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=60)


def read_stalled(api: ApiProcess, path: str, key: str, stall_s: float) -> int:
    """GET ``path`` and read nothing for ``stall_s`` (the server's sends stall, and it gives up
    if it is to); then read what the sockets buffered, to the close. The bytes received."""
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
                     .encode())
        time.sleep(stall_s)
        sock.settimeout(10)
        received = 0
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
    return received
