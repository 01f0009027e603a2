"""Fixtures of the tenants suite: a fleet of the test's own (a fresh database, queue and fleet
label, from the fault suite's rig), with tenants and a client for each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airlock.client import Airlock
from config.settings import Settings
from tasks.tenancy import TenantStore
from tests.faults.rig import Fleet, fleet_for

TenantClient = Callable[[str], Airlock]


@pytest.fixture
def tenant_logs(artifacts: Path) -> Path:
    path = artifacts / "tenants"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tenant_fleet(tenant_logs: Path) -> Iterator[Fleet]:
    base = Settings(concurrency=4, reaper_interval_s=2.0, reconcile_after_s=5.0, pool_size=1)
    with fleet_for(base, tenant_logs) as f:
        yield f


@pytest.fixture
def tenant_client(tenant_fleet: Fleet) -> Iterator[TenantClient]:
    """A client of a tenant (made on first use), closed afterwards."""
    made: list[Airlock] = []
    store = TenantStore(tenant_fleet.db)

    def client(name: str) -> Airlock:
        store.create(name)
        c = Airlock(tenant_fleet.settings, tenant=name)
        made.append(c)
        return c

    yield client
    for c in made:
        c.close()
