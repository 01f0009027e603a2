"""Quotas (issue 22), each refused just past its edge with the right error and nothing stored
for the refused job: jobs queued, submissions a minute, CPU-seconds a day, per-limit maxima;
jobs in flight held by the admission (sampled: never over). Through the client and the API."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from pathlib import Path

import httpx
import pytest

from base.errors import JobSpecError, QuotaExceeded
from tasks.keys import Scope
from tasks.tenancy import TenantStore
from tests.faults.rig import Fleet
from tests.services import ApiProcess
from tests.tenants.conftest import TenantClient

pytestmark = [pytest.mark.integration, pytest.mark.tenants]


def stored(fleet: Fleet, tenant: str) -> int:
    return int(fleet.sql("SELECT count(*) AS n FROM jobs WHERE tenant = :t", t=tenant)[0].n)


def not_at_a_minutes_end() -> None:
    """A rate quota counts per minute: start a burst early in one."""
    second = dt.datetime.now(dt.UTC).second
    if second > 50:
        time.sleep(61 - second)


def test_jobs_queued(tenant_fleet: Fleet,
                                              tenant_client: TenantClient) -> None:
    store = TenantStore(tenant_fleet.db)
    c = tenant_client("queued")  # no worker yet: every job stays queued
    store.set_quota("queued", max_queued=3)
    for _ in range(3):
        c.submit(code="print(1)")
    with pytest.raises(QuotaExceeded) as refused:
        c.submit(code="print(1)")
    assert refused.value.quota == "max_queued" and "at most 3 jobs waiting" in str(refused.value)
    assert stored(tenant_fleet, "queued") == 3


def test_submissions_a_minute(tenant_fleet: Fleet, tenant_client: TenantClient) -> None:
    store = TenantStore(tenant_fleet.db)
    c = tenant_client("rate")
    store.set_quota("rate", submissions_per_min=5)
    not_at_a_minutes_end()
    for i in range(5):
        c.submit(code="print(1)", idempotency_key=f"r{i}")
    c.submit(code="print(1)", idempotency_key="r0")  # the same job again is no submission
    with pytest.raises(QuotaExceeded) as refused:
        c.submit(code="print(1)")
    assert refused.value.quota == "submissions_per_min"
    assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 60
    assert stored(tenant_fleet, "rate") == 5


def test_cpu_seconds_a_day(tenant_fleet: Fleet, tenant_client: TenantClient) -> None:
    tenant_fleet.worker()
    store = TenantStore(tenant_fleet.db)
    c = tenant_client("cpu")
    store.set_quota("cpu", cpu_s_per_day=1)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.2: pass"
    assert c.submit(code=burn).wait(60).verdict == "ok"
    with pytest.raises(QuotaExceeded) as refused:
        c.submit(code="print(1)")
    assert refused.value.quota == "cpu_s_per_day"
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    assert refused.value.retry_after_s == pytest.approx(
        (tomorrow - dt.datetime.now(dt.UTC)).total_seconds(), abs=5)
    assert stored(tenant_fleet, "cpu") == 1


def test_per_limit_maxima(tenant_fleet: Fleet, tenant_client: TenantClient) -> None:
    tenant_fleet.worker()
    store = TenantStore(tenant_fleet.db)
    c = tenant_client("small")
    store.set_quota("small", max_limits={"cpus": 1, "memory_bytes": 256 << 20})
    with pytest.raises(JobSpecError) as refused:
        c.submit(code="print(1)", limits={"memory_bytes": 512 << 20})
    assert refused.value.field == "limits.memory_bytes"
    assert stored(tenant_fleet, "small") == 0
    record = c.submit(code="print(1)").wait(60)  # the defaults are lowered to its maxima
    assert (record.verdict, record.limits["cpus"], record.limits["memory_bytes"]) == \
        ("ok", 1.0, 256 << 20)


def test_jobs_in_flight_never_exceed_the_quota(tenant_fleet: Fleet,
                                               tenant_client: TenantClient) -> None:
    tenant_fleet.worker()  # 4 slots
    store = TenantStore(tenant_fleet.db)
    c, other = tenant_client("narrow"), tenant_client("other")
    store.set_quota("narrow", max_in_flight=1)
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rows = tenant_fleet.sql("SELECT count(*) AS n FROM jobs WHERE tenant = 'narrow'"
                                    " AND status = 'running'")
            seen.append(int(rows[0].n))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        narrow = [c.submit(code="import time; time.sleep(0.5)").id for _ in range(6)]
        others = [other.submit(code="import time; time.sleep(0.5)").id for _ in range(6)]
        records = [c.wait(j, 120) for j in narrow + others]
    finally:
        stop.set()
        sampler.join()
    assert all(r.verdict == "ok" for r in records)
    assert max(seen) == 1, "more than one of its jobs ran at once"
    # and the other tenant used the rest of the slots meanwhile
    assert max(r.finished_at for r in records[6:]) < max(r.finished_at for r in records[:6])  # type: ignore[type-var]


def test_through_the_api_a_quota_is_429_with_retry_after(tenant_fleet: Fleet,
                                                         tenant_logs: Path) -> None:
    secret = secrets.token_hex(32)
    s = tenant_fleet.settings.but(api_key_secret=secret)
    store = TenantStore(tenant_fleet.db)
    store.create("api-rate")
    store.set_quota("api-rate", submissions_per_min=2)
    key = store.create_key("api-rate", Scope.SUBMIT, secret.encode()).token
    api = ApiProcess(s, tenant_logs / f"api-{s.fleet}.log").start()
    try:
        not_at_a_minutes_end()
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as h:
            codes = [h.post("/v1/jobs", json={"code": "print(1)"}).status_code for _ in range(2)]
            refused = h.post("/v1/jobs", json={"code": "print(1)"})
            batch = h.post("/v1/batches", content=b'{"code": "print(2)"}\n',
                           headers={"Content-Type": "application/x-ndjson"})
    finally:
        api.stop()
    assert codes == [201, 201]
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["field"] == "submissions_per_min"
    assert batch.status_code == 201 and batch.json()["lines"][0]["error"].startswith("quota:")
    assert stored(tenant_fleet, "api-rate") == 2
