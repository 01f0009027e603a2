"""F23, the admission (tasks/admission.py) when its admitter dies: before its commit (a
transaction holding the admission's lock, its backend then killed), nothing changed and the
next admission takes over; after its commit but before sending (jobs marked admitted, no
message), the reconciler sends them. Every job runs once, none is lost."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.faults.rig import Fleet, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f23_an_admitter_that_dies_holding_the_lock_changes_nothing(fleet: Fleet) -> None:
    fleet.configure(concurrency=2)
    w = fleet.worker()
    stuck = sa.create_engine(fleet.settings.database_url, pool_size=1)
    conn = stuck.connect()
    try:
        tx = conn.begin()  # an admitter that took the lock, then hung
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
            sa.func.hashtext(f"airlock:admit:{fleet.settings.queue}"))))
        pid = conn.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        jobs = [fleet.submit(f"print({i})") for i in range(4)]  # each admission gives up (2 s)
        assert fleet.sql("SELECT count(*) FROM jobs WHERE admitted_at IS NOT NULL")[0][0] == 0
        fleet.sql("SELECT pg_terminate_backend(:p)", p=pid)  # it dies: its lock goes with it
        records = [fleet.wait(j, 60) for j in jobs]
    finally:
        try:
            tx.rollback()
        except sa.exc.DBAPIError:
            pass  # the backend was killed
        conn.close()
        stuck.dispose()
    assert [(r.verdict, r.stdout, r.attempt) for r in records] == \
        [("ok", f"{i}\n", 1) for i in range(4)]
    assert w.proc is not None and w.proc.poll() is None


def test_f23_jobs_admitted_by_an_admitter_that_died_before_sending_are_sent(fleet: Fleet) -> None:
    fleet.configure(reconcile_after_s=2.0)
    jobs = [fleet.stored_job(f"print({i})") for i in range(3)]  # committed, never sent
    w = fleet.worker()
    records = [fleet.wait(j, 60) for j in jobs]
    assert [(r.verdict, r.attempt) for r in records] == [("ok", 1)] * 3
    wait_for("the reconciler's word", lambda: w.log().count("reconciler.requeue") >= 3, 10)
    assert fleet.sql("SELECT count(*) FROM attempts")[0][0] == 3  # once each
