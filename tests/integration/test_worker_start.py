"""A worker pointed at a database it cannot use refuses to start within seconds, with one line
naming why; one that cannot reach its database yet waits, says so, and never says it is ready."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.settings import Settings
from tasks.migrate import upgrade
from tests.attacks.test_preflight_worker import run_worker_until_exit
from tests.services import ADMIN_URL

pytestmark = pytest.mark.integration


def refused_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, log[-2000:]
    return lines[0]


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql+psycopg://airlock_no_such_role@127.0.0.1:5432/postgres", "wrong credentials"),
    ("postgresql+psycopg://postgres@127.0.0.1:5432/airlock_no_such_db", "no such database"),
])
def test_a_worker_refuses_a_database_it_cannot_use(settings: Settings, tmp_path: Path,
                                                    url: str, reason: str) -> None:
    other = settings.but(**{"database_url": url, "queue": f"{settings.queue}-db"})
    t0 = time.monotonic()
    status, log = run_worker_until_exit(other, tmp_path / "worker.log", timeout=60)
    seconds = time.monotonic() - t0

    assert status == 3, log[-2000:]
    assert f"refusing to start: PostgreSQL: {reason}: " in refused_line(log)
    assert " ready." not in log and "preflight" not in log  # refused before any canary ran
    assert seconds < 15


def test_a_worker_refuses_a_schema_it_does_not_match(settings: Settings, tmp_path: Path) -> None:
    name = f"airlock_t_schema_{int(time.time() * 1000) % 10**9}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    other = settings.but(**{"database_url": url, "queue": f"{settings.queue}-s"})
    try:
        status, log = run_worker_until_exit(other, tmp_path / "empty.log", timeout=60)
        assert status == 3 and "the database has no schema" in refused_line(log), log[-2000:]
        upgrade(url, "0002")  # a fleet that has not run this code's migrations yet
        status, log = run_worker_until_exit(other, tmp_path / "behind.log", timeout=60)
        line = refused_line(log)
        assert status == 3 and "schema is at migration 0002, behind this code's" in line, line
        assert "run airlock db upgrade" in line
        upgrade(url)
        db = sa.create_engine(url)
        with db.begin() as conn:  # a migration from a newer release of Airlock
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_newer'"))
        db.dispose()
        status, log = run_worker_until_exit(other, tmp_path / "ahead.log", timeout=60)
        line = refused_line(log)
        assert status == 3 and "migration ffff_newer, which this code does not know" in line
        assert "the schema is ahead" in line
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_worker_waits_for_a_database_it_cannot_reach_and_says_so(settings: Settings,
                                                                   tmp_path: Path) -> None:
    # Nothing listens on this loopback port: an outage, not a refusal.
    other = settings.but(**{
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/airlock",
        "queue": f"{settings.queue}-wait"})
    status, log = run_worker_until_exit(other, tmp_path / "worker.log", timeout=8)

    assert status is None, log[-2000:]  # still waiting when stopped
    assert "worker.waiting" in log and "service=PostgreSQL" in log, log[-2000:]
    assert " ready." not in log and "refusing" not in log


@pytest.mark.parametrize("service", ["PostgreSQL", "Redis"])
def test_a_worker_refuses_a_control_plane_still_unreachable_after_its_wait(
        settings: Settings, tmp_path: Path, service: str) -> None:
    # Nothing listens on this loopback port: waited out for AIRLOCK_CONTROL_PLANE_WAIT_S, then
    # refused in one line naming the service and how long it waited.
    url = ("postgresql+psycopg://postgres@127.0.0.1:1/airlock" if service == "PostgreSQL"
           else "redis://127.0.0.1:1/0")
    other = settings.but(**{"queue": f"{settings.queue}-cp",
                            "database_url" if service == "PostgreSQL" else "redis_url": url})
    t0 = time.monotonic()
    status, log = run_worker_until_exit(other, tmp_path / "worker.log", timeout=60,
                                        AIRLOCK_CONTROL_PLANE_WAIT_S="3",
                                        AIRLOCK_REDIS_URL=other.redis_url)
    assert status == 3, log[-2000:]
    line = refused_line(log)
    assert f"refusing to start: {service}: not reachable within 3 s" in line, line
    assert "AIRLOCK_CONTROL_PLANE_WAIT_S" in line and " ready." not in log
    assert time.monotonic() - t0 < 30


def test_a_worker_named_from_its_engine_takes_the_docker_hosts_name(settings: Settings) -> None:
    import docker

    from tasks.startup import check_host

    named = check_host(settings.but(worker_name_from="engine", hostname="not-this"))
    api = docker.APIClient(version="auto")
    try:
        assert named.hostname == api.info()["Name"] != "not-this"
    finally:
        api.close()


def test_a_worker_that_requires_apparmor_refuses_a_host_without_it(settings: Settings,
                                                                  tmp_path: Path) -> None:
    from workers.apparmor import read_kernel

    kernel = read_kernel()
    other = settings.but(**{"queue": f"{settings.queue}-aa"})
    status, log = run_worker_until_exit(other, tmp_path / "worker.log", timeout=90,
                                        AIRLOCK_APPARMOR="require")
    if kernel.enabled and kernel.loaded.get(settings.sandbox.apparmor_profile) == "enforce":
        assert status is None and "worker.apparmor" in log, log[-2000:]  # applied, not refused
        return
    line = refused_line(log)
    assert status == 3 and "refusing to start: AppArmor required (AIRLOCK_APPARMOR=require): " \
        in line, log[-2000:]
    assert " ready." not in log and "preflight" not in log
