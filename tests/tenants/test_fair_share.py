"""Fair share (issue 22): on a fleet of 4 slots, tenant A submits 300 jobs of about a second,
then tenant B submits 10. With fair share, B's first job starts within 1.5 job-durations of
its submission and all ten within 6 (B's fair half of the slots, plus a turnover); A's jobs
all finish, each tenant's in its own submission order. With fair share off (first come,
first served), B waits behind all of A's, about 75 job-durations. Both runs' waits are
printed."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from tests.faults.rig import Fleet
from tests.tenants.conftest import TenantClient

pytestmark = [pytest.mark.integration, pytest.mark.tenants]
JOB = "import time; time.sleep(1)"
A_JOBS, B_JOBS = 300, 10


def waits(records: list[JobRecord]) -> list[float]:
    return [(r.started_at - r.queued_at).total_seconds() for r in records  # type: ignore[operator]
            if r.started_at is not None]


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10) if len(xs) > 1 else xs * 9
    return (f"min {min(xs):6.1f}  p10 {q[0]:6.1f}  median {statistics.median(xs):6.1f}"
            f"  p90 {q[8]:6.1f}  max {max(xs):6.1f} s")


def flood_then_newcomer(a: Airlock, b: Airlock) -> tuple[list[JobRecord], list[JobRecord], float]:
    """A's 300, then B's 10; both tenants' records once all ended, and the job-duration."""
    a_ids = [a.submit(code=JOB).id for _ in range(A_JOBS)]
    b_ids = [b.submit(code=JOB).id for _ in range(B_JOBS)]
    deadline = time.monotonic() + 600
    a_done = [a.wait(j, max(1.0, deadline - time.monotonic())) for j in a_ids]
    b_done = [b.wait(j, max(1.0, deadline - time.monotonic())) for j in b_ids]
    duration = statistics.median((r.finished_at - r.started_at).total_seconds()  # type: ignore[operator]
                                 for r in a_done)
    return a_done, b_done, duration


def admitted_in_order(fleet: Fleet, records: list[JobRecord]) -> bool:
    """Each tenant's jobs are given their turn in its submission order (their start follows
    by a few milliseconds, in whichever worker process takes the message first)."""
    when = {str(r.id): r.admitted_at for r in fleet.sql("SELECT id, admitted_at FROM jobs")}
    admitted = [when[r.id] for r in records]
    return all(x <= y for x, y in itertools.pairwise(admitted))


def report(title: str, a: list[JobRecord], b: list[JobRecord], d: float) -> None:
    print(f"\n{title} (job-duration {d:.2f} s, 4 slots)")
    print(f"  A, {len(a)} jobs: waits {spread(waits(a))}")
    print(f"  B, {len(b)} jobs: waits {spread(waits(b))}")
    print(f"  B in job-durations: first {min(waits(b)) / d:.2f}, last {max(waits(b)) / d:.2f}")


@pytest.mark.timeout(900)
def test_a_newcomer_is_not_starved_by_a_flood(tenant_fleet: Fleet,
                                              tenant_client: TenantClient) -> None:
    tenant_fleet.worker()
    a, b = tenant_client("flood"), tenant_client("newcomer")
    a_done, b_done, d = flood_then_newcomer(a, b)
    report("fair share on", a_done, b_done, d)
    assert all(r.verdict == "ok" for r in a_done + b_done)
    b_waits = waits(b_done)
    assert min(b_waits) <= 1.5 * d, b_waits
    assert max(b_waits) <= 6 * d, b_waits
    assert admitted_in_order(tenant_fleet, a_done) and admitted_in_order(tenant_fleet, b_done)


@pytest.mark.timeout(900)
def test_without_fair_share_the_newcomer_waits_behind_the_flood(
        tenant_fleet: Fleet, tenant_client: TenantClient) -> None:
    tenant_fleet.configure(fair_share=False)
    tenant_fleet.worker()
    a, b = tenant_client("flood"), tenant_client("newcomer")
    a_done, b_done, d = flood_then_newcomer(a, b)
    report("fair share off (first come, first served)", a_done, b_done, d)
    assert all(r.verdict == "ok" for r in a_done + b_done)
    assert min(waits(b_done)) >= 0.8 * (A_JOBS / 4) * d  # behind (nearly) all of A's
