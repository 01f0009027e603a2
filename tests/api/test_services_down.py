"""The API with a service away: PostgreSQL down is 503 with Retry-After and nothing written;
Redis down still records the job (PostgreSQL is the truth), says it was not sent, and the
fleet's reconciler runs it; the process keeps serving, and /readyz says which is away. A
reader that stops reading an event stream is dropped, its memory with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from tests.api.conftest import read_stalled
from tests.services import ApiProcess, WorkerProcess, free_port

pytestmark = pytest.mark.integration


def dead_url(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}/0"  # a loopback port nothing listens on


@pytest.fixture(scope="module")
def no_redis_api(api_settings: Settings, artifacts: Path) -> Iterator[ApiProcess]:
    dead = dead_url("redis")
    proc = ApiProcess(api_settings, artifacts / "api-no-redis.log", AIRLOCK_BROKER_URL=dead,
                      AIRLOCK_REDIS_URL=dead).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def no_pg_api(api_settings: Settings, artifacts: Path) -> Iterator[ApiProcess]:
    dead = f"postgresql+psycopg://airlock@127.0.0.1:{free_port()}/airlock"
    proc = ApiProcess(api_settings, artifacts / "api-no-pg.log",
                      AIRLOCK_DATABASE_URL=dead).start()
    yield proc
    proc.stop()


def test_postgresql_down_is_503_with_retry_after(no_pg_api: ApiProcess,
                                                 keys: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {keys['tenant-a:submit']}"}
    with httpx.Client(base_url=no_pg_api.url, headers=auth, timeout=30) as c:
        for answer in (c.post("/v1/jobs", json={"code": "print(1)"}),
                       c.get("/v1/jobs"), c.get("/readyz")):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"].isdigit()
            assert answer.headers["content-type"] == "application/problem+json"
            assert "postgresql" in answer.text.lower()
            assert "127.0.0.1" not in answer.text  # where it is stays the server's
        assert c.get("/healthz").json()["status"] == "ok"


def test_redis_down_records_the_job_and_the_reconciler_runs_it(
        no_redis_api: ApiProcess, api: ApiProcess, keys: dict[str, str],
        worker: WorkerProcess) -> None:
    auth = {"Authorization": f"Bearer {keys['tenant-a:submit']}"}
    with httpx.Client(base_url=no_redis_api.url, headers=auth, timeout=30) as c:
        answer = c.post("/v1/jobs", json={"code": "print('sent later')"})
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert (job["status"], job["enqueued"]) == ("queued", False)
        assert "reconciler" in job["note"]
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "redis" in ready.json()["detail"]
    with httpx.Client(base_url=api.url, headers=auth, timeout=90) as c:  # a healthy one
        done = c.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
        if done["status"] == "queued":  # the reconciler waits reconcile_after_s (30 s)
            done = c.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    assert (done["verdict"], done["stdout"]) == ("ok", "sent later\n")


def test_a_reader_that_stops_reading_is_dropped(api_settings: Settings, artifacts: Path,
                                                keys: dict[str, str],
                                                worker: WorkerProcess) -> None:
    proc = ApiProcess(api_settings, artifacts / "api-slow-reader.log",
                      AIRLOCK_API_SEND_TIMEOUT_S="2").start()
    auth = {"Authorization": f"Bearer {keys['tenant-a:submit']}"}
    try:
        with httpx.Client(base_url=proc.url, headers=auth, timeout=90) as c:
            loud = "import sys\nfor _ in range(60): sys.stdout.write('x' * 1048576)\n"
            job = c.post("/v1/jobs", params={"wait": 60}, json={
                "code": loud, "limits": {"output_bytes": 64 * 1048576}}).json()
            assert job["verdict"] == "ok"
        # not reading: the server's sends stall, then it gives up
        received = read_stalled(proc, f"/v1/jobs/{job['id']}/events", keys["tenant-a:submit"],
                                stall_s=8)
        assert received < 30 * 1048576  # it stopped well before the 60 MiB
        assert "sse.reader_dropped" in proc.log()
        rss_kib = int(next(line for line in Path(f"/proc/{proc.proc.pid}/status")  # type: ignore[union-attr]
                           .read_text().splitlines() if line.startswith("VmRSS")).split()[1])
        assert rss_kib < 400 * 1024
        with httpx.Client(base_url=proc.url, headers=auth, timeout=30) as c:
            assert c.get("/healthz").status_code == 200  # and it serves on
    finally:
        proc.stop()
