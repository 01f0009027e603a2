"""The reaper's selection (workers/reaper.py): pure, given the containers, the jobs as
PostgreSQL sees them, and ``now``."""

from __future__ import annotations

import math

import pytest

from workers import labels as L
from workers.reaper import ContainerView, JobState, Reason, select
from workers.spec import job_labels

FLEET = "prod"
NOW = 1_000_000.0
JOB = "6f1c8a52-6c43-4b8f-9b47-2d2f4b7b0d11"


def view(job: str = JOB, attempt: int = 1, *, created: float = NOW - 10,
         deadline: float = NOW + 100, running: bool = True, role: str = L.ROLE_JOB,
         **labels: str) -> ContainerView:
    base = job_labels(fleet=FLEET, host="h1", role=role, job=job, attempt=attempt,
                      created=created, deadline=deadline)
    merged = {k: v for k, v in (base | labels).items() if v != "<drop>"}
    return ContainerView.from_labels(f"c-{job[:4]}-{attempt}-{role}", merged, running)


def running(attempt: int = 1, overdue: float = -20.0) -> JobState:
    return JobState("running", attempt, overdue)


def reasons(containers: list[ContainerView], jobs: dict[str, JobState], *, now: float = NOW,
            grace: float = 30.0) -> list[Reason]:
    return [r.reason for r in select(containers, jobs, fleet=FLEET, now=now,
                                     pool_max_age_s=600, lease_grace_s=grace)]


@pytest.mark.parametrize("labels", [
    {L.MANAGED: "<drop>"}, {L.MANAGED: "false"}, {L.MANAGED: "True"},
    {L.FLEET: "other"}, {L.FLEET: FLEET + "-2"}, {L.FLEET: "<drop>"},
])
def test_a_container_without_both_of_our_labels_is_never_selected(labels: dict[str, str]) -> None:
    # Whatever its job looks like: finished, unknown and old, lease long gone.
    for jobs in ({JOB: JobState("finished", 1, math.inf)}, {}, {JOB: running(overdue=1e6)}):
        assert reasons([view(created=0, deadline=1, **labels)], jobs) == []


def test_a_container_with_no_labels_at_all_is_never_selected() -> None:
    assert select([ContainerView.from_labels("c", {}, True)], {}, fleet=FLEET, now=NOW,
                  pool_max_age_s=0) == []


def test_a_live_attempt_keeps_its_container() -> None:
    assert reasons([view()], {JOB: running()}) == []


def test_a_finished_job_loses_its_container() -> None:
    assert reasons([view()], {JOB: JobState("finished", 1, math.inf)}) == [Reason.JOB_FINISHED]


def test_an_older_attempt_or_a_requeued_job_is_stale() -> None:
    assert reasons([view(attempt=1)], {JOB: running(attempt=2)}) == [Reason.STALE_ATTEMPT]
    assert reasons([view()], {JOB: JobState("queued", 1, math.inf)}) == [Reason.STALE_ATTEMPT]


def test_a_lease_is_lost_only_past_the_grace() -> None:
    assert reasons([view()], {JOB: running(overdue=10)}, grace=30) == []
    assert reasons([view()], {JOB: running(overdue=31)}, grace=30) == [Reason.LEASE_EXPIRED]
    assert reasons([view()], {JOB: running(overdue=0.5)}, grace=0) == [Reason.LEASE_EXPIRED]


def test_the_container_deadline_is_judged_at_now() -> None:
    c = view(deadline=NOW + 5)
    jobs = {JOB: running()}
    assert reasons([c], jobs, now=NOW) == []
    assert reasons([c], jobs, now=NOW + 6) == [Reason.DEADLINE_PASSED]


def test_an_unknown_job_is_given_time_to_be_recorded() -> None:
    assert reasons([view(created=NOW - 5)], {}) == []
    assert reasons([view(created=NOW - 500)], {}) == [Reason.UNKNOWN_JOB]
    assert reasons([view(job="not-a-uuid", created=NOW - 500)], {}) == [Reason.UNKNOWN_JOB]


def test_pool_containers_waiting_for_a_job() -> None:
    young = view(job="", attempt=0, role=L.ROLE_POOL, created=NOW - 10)
    old = view(job="", attempt=0, role=L.ROLE_POOL, created=NOW - 700)
    starting = view(job="", attempt=0, role=L.ROLE_POOL, running=False, created=NOW - 1)
    dead = view(job="", attempt=0, role=L.ROLE_POOL, running=False, created=NOW - 300)
    assert reasons([young], {}) == []
    assert reasons([old], {}) == [Reason.POOL_EXPIRED]
    assert reasons([starting], {}) == []  # created, not started yet: given time
    assert reasons([dead], {}) == [Reason.EXITED]


def test_a_pool_container_given_a_job_is_judged_by_that_job() -> None:
    # Its labels cannot say which job it took; the attempts table does (filled in by the I/O).
    taken = ContainerView.from_labels("c-pool", view(job="", attempt=0, role=L.ROLE_POOL).labels,
                                      True, JOB, 2)
    assert reasons([taken], {JOB: running(attempt=2)}) == []
    assert reasons([taken], {JOB: running(attempt=2, overdue=100)}) == [Reason.LEASE_EXPIRED]
    # What it does now, for the containers-running gauge: a job, while the idle one is pool.
    idle = view(job="", attempt=0, role=L.ROLE_POOL)
    assert (taken.role, idle.role, view().role) == (L.ROLE_JOB, L.ROLE_POOL, L.ROLE_JOB)


def test_only_lost_attempts_release_their_job() -> None:
    releasing = {Reason.LEASE_EXPIRED, Reason.DEADLINE_PASSED}
    containers = [view(attempt=1), view(job=JOB.replace("6", "7"))]
    jobs = {JOB: running(attempt=1, overdue=100), JOB.replace("6", "7"): running(overdue=100)}
    for removal in select(containers, jobs, fleet=FLEET, now=NOW, pool_max_age_s=600,
                          lease_grace_s=30):
        assert removal.releases_job == (removal.reason in releasing)


def test_lease_expired_property() -> None:
    assert running(overdue=1).lease_expired and not running(overdue=-1).lease_expired
    assert JobState("queued", 0, math.inf).lease_expired
