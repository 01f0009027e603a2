"""Fixtures of the fleet suite: a control plane of the test's own (a scratch database, a queue
and fleet label on this machine's Redis), the second Docker engine, and a folder for logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from tests.faults.conftest import engine2  # noqa: F401 - the second engine, for the session
from tests.faults.rig import Fleet, fleet_for


@pytest.fixture(scope="session")
def fleet_logs(artifacts: Path) -> Path:
    path = artifacts / "fleet"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def control_plane(fleet_logs: Path) -> Iterator[Fleet]:
    base = Settings(concurrency=2, reaper_interval_s=2.0, reconcile_after_s=5.0,
                    leftover_grace_s=20.0)
    with fleet_for(base, fleet_logs) as f:
        yield f
