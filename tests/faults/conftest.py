"""Fixtures of the fault suite: a fleet of the test's own, dedicated Redis servers, a PostgreSQL
proxy, and the second Docker engine (started for the session if it was not running)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from tests.faults.rig import Engine2, Fleet, PgProxy, RedisServer, fleet_for

MakeRedis = Callable[..., RedisServer]
# docker-py's unix transport does not close the socket of a connect that failed, so a client
# that meets a stopped engine (the second engine, F12/F14) leaves one for the GC, whose
# ResourceWarning then lands in whichever test runs next. The rig avoids the connects it knows
# of (rig._answers); this keeps a stray one from failing an unrelated test.
DOCKER_PY_SOCKET_LEAK = ("ignore:Exception ignored in. <socket.socket"
                         ":pytest.PytestUnraisableExceptionWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings(DOCKER_PY_SOCKET_LEAK))


@pytest.fixture(scope="session")
def fault_logs(artifacts: Path) -> Path:
    path = artifacts / "faults"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def fault_base() -> Settings:
    """Small intervals so the reaper and the reconciler act within a second or two; leases and
    deadlines keep their defaults (tests make time pass in SQL instead of sleeping). Cold jobs
    unless ``AIRLOCK_TEST_FAULT_POOL_SIZE`` says otherwise (``test_pool_faults.py`` runs the
    pooled cases in every run)."""
    return Settings(concurrency=1, reaper_interval_s=1.0, reconcile_after_s=2.0,
                    leftover_grace_s=20.0,  # a killed worker's side resources, swept soon
                    pool_size=int(os.environ.get("AIRLOCK_TEST_FAULT_POOL_SIZE", "0")))


@pytest.fixture
def fleet(fault_base: Settings, fault_logs: Path) -> Iterator[Fleet]:
    with fleet_for(fault_base, fault_logs) as f:
        yield f


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[MakeRedis]:
    servers: list[RedisServer] = []

    def make(*, appendonly: bool) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", appendonly=appendonly).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def pg_proxy() -> Iterator[PgProxy]:
    proxy = PgProxy().start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def engine2() -> Iterator[Engine2]:
    e = Engine2()
    was_running = e.running()
    e.start()
    yield e
    if not was_running:
        e.stop()
