"""Shared fixtures. One database, one worker and one fleet label per test session, so
sessions running side by side never see each other's jobs or containers."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from base.errors import NoSuchFile
from config.settings import Profile, Settings
from tests.services import WorkerProcess, airlock_containers, scratch_database, wait_no_containers
from workers import labels as L

ARTIFACTS = Path(os.environ.get("AIRLOCK_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
RunJob = Callable[..., JobRecord]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


# AIRLOCK_TEST_PROFILES=agent: every profile of the session's fleet runs as the agent profile
# does (its image, its seccomp profile, its unmasked /proc, its sandbox settings), so the attack
# suite holds the agent profile to the same containment (scripts/test.sh, docs/attacks.md).
AGENT_RUN = os.environ.get("AIRLOCK_TEST_PROFILES") == "agent"


def session_profiles() -> dict[str, Profile]:
    defaults = Settings().profiles
    if not AGENT_RUN:
        return defaults
    agent = defaults["agent"]
    return {name: p.model_copy(update={"image": agent.image, "inner_sandbox": True})
            for name, p in defaults.items()}


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        database_url=database_url, fleet=f"test-{tag}", queue=f"airlock-test-{tag}",
        concurrency=int(os.environ.get("AIRLOCK_TEST_CONCURRENCY", "2")),
        pool_size=0 if AGENT_RUN else int(os.environ.get("AIRLOCK_TEST_POOL_SIZE", "0")),
        pool_profiles=() if AGENT_RUN else ("python",),
        profiles=session_profiles(),
        netns_holders=os.environ.get("AIRLOCK_TEST_NETNS_HOLDERS", "egress"),
        reaper_interval_s=5.0,
        # The session's own key: its workers open the secrets its clients store.
        secrets_key=base64.b64encode(os.urandom(32)).decode(),
    )


@pytest.fixture(scope="session")
def worker(settings: Settings, artifacts: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(settings, artifacts / f"worker-{settings.fleet}.log",
                         AIRLOCK_NETNS_HOLDERS=settings.holders.mode).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[Airlock]:
    c = Airlock(settings)
    yield c
    c.close()


@pytest.fixture
def run_job(client: Airlock, worker: WorkerProcess) -> RunJob:
    """Submit a job through the public API and wait for its stored result."""

    def run(code: str | None = None, *, wait: float = 120.0, **fields: Any) -> JobRecord:
        limits = {k: fields.pop(k) for k in list(fields) if k in (
            "timeout_s", "cpus", "memory_bytes", "pids", "output_bytes", "disk_bytes")}
        spec: dict[str, Any] = {"code": code, **fields}
        if limits:
            spec["limits"] = limits
        return client.submit({k: v for k, v in spec.items() if v is not None}).wait(wait)

    return run


@pytest.fixture
def no_leftovers(settings: Settings, client: Airlock) -> Iterator[None]:
    """After the test: no job container of this fleet remains, pooled ones included (those
    carry no job label: a job's pooled container is known by its attempt)."""
    yield
    left = wait_no_containers(settings.fleet, timeout=15)
    assert not left, f"Airlock containers left behind: {[c['Id'] for c in left]}"
    deadline = time.monotonic() + 15
    while True:
        pooled = [str(c["Id"]) for c in airlock_containers(settings.fleet)
                  if (c.get("Labels") or {}).get(L.ROLE) == L.ROLE_POOL]  # type: ignore[union-attr]
        given = client.store.jobs_by_container(pooled)
        if not given or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not given, f"pooled job containers left behind: {sorted(given)}"


@pytest.fixture
def canary(run_job: RunJob) -> Callable[[], JobRecord]:
    """A trivial job that must finish normally right after an attack."""

    def check() -> JobRecord:
        record = run_job("print('canary ok')", timeout_s=30)
        assert record.verdict == "ok", record.summary()
        assert record.stdout == "canary ok\n"
        return record

    return check


def check_reads(client: Airlock, job_id: str, name: str, data: bytes) -> None:
    """The client reads the collected file ``name`` as ``data``: whole, and in byte ranges
    (within a frame, across frames, to the end, empty, past the end); an unknown name is
    NoSuchFile."""
    mib = 1024 * 1024
    for start, end in ((0, None), (0, 10), (mib - 3, mib + 3), (2 * mib, None),
                       (len(data) - 1, None), (5, 5), (len(data), None)):
        got = b"".join(client.download(job_id, name, start, end))
        assert got == data[start:end], (start, end)
    with pytest.raises(NoSuchFile):
        list(client.download(job_id, name + ".not-kept"))
