"""F10: PostgreSQL down for 30 s during result writes; a connection killed right after its
COMMIT; two attempts writing at once. The worker reaches PostgreSQL through a proxy the test
controls (tests/faults/rig.py: PgProxy); the test itself reads the database directly.
"""

from __future__ import annotations

import threading
import time

import pytest

from tasks.store import JobStore, Outcome, make_engine
from tests.faults.rig import Fleet, PgProxy, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]
OUTAGE_S = 30.0


def test_f10_postgres_down_for_30s_during_result_writes(fleet: Fleet, pg_proxy: PgProxy) -> None:
    """One job's result write waits the outage out; one submitted during it (the client's
    database is not cut) cannot be claimed meanwhile: its delivery is retried with backoff,
    and past the retries left to the reconciler. Both end ok, each stored once."""
    w = fleet.worker(database_url=pg_proxy.url(fleet.settings.database_url), concurrency=2)
    job = fleet.submit(
        f"import time; time.sleep(max(0, {time.time() + 3} - time.time())); print('done')")
    fleet.running_container(job)
    pg_proxy.down()  # refused and cut: the job ends and its result write fails, again and again
    down_at = time.monotonic()
    during = fleet.submit("print('submitted during the outage')")  # the client's database is up
    wait_for("the job's result write to fail", lambda: "job.result_write_retry" in w.log(), 20)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    pg_proxy.up()

    record = fleet.wait(job, 60)
    assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 1), record
    assert [a.outcome for a in fleet.attempts(job)] == ["finished"]
    assert fleet.end_events(job) == 1
    assert "lease.renew_failed" in w.log()  # the lease keeper kept trying meanwhile
    later = fleet.wait(during, 90)
    assert later.verdict == "ok", later
    assert [a.outcome for a in fleet.attempts(during)][-1] == "finished"
    assert not fleet.leftovers()


def test_f10_connection_killed_right_after_commit(fleet: Fleet, pg_proxy: PgProxy) -> None:
    pg_proxy.arm("drop_after_commit")
    w = fleet.worker(database_url=pg_proxy.url(fleet.settings.database_url))
    job = fleet.submit("print('done')")
    record = fleet.wait(job, 60)
    assert pg_proxy.fired.is_set()
    assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 1), record
    # The write was retried and found its own COMMIT: stored once, announced once.
    assert "job.result_write_retry" in w.log() and "job.result_fenced" not in w.log()
    assert [a.outcome for a in fleet.attempts(job)] == ["finished"]
    wait_for("the end event", lambda: fleet.end_events(job) == 1, 10)
    assert not fleet.leftovers()


def _outcome(text: str) -> Outcome:
    return Outcome(verdict="ok", exit_code=0, stdout=text.encode(), stdout_bytes=len(text))


def test_f10_two_attempts_writing_at_once(fleet: Fleet) -> None:
    """A stale attempt (its worker presumed dead) and the attempt that took the job over write
    at the same instant, each through its own connection; then the same attempt twice (a
    retried write racing the first). 20 rounds of each, released together by a barrier."""
    stores = [JobStore(make_engine(fleet.settings.database_url)) for _ in range(2)]
    try:
        for _ in range(20):
            job = fleet.stored_job("print(1)", timeout_s=1)
            old = stores[0].claim(job, host="a", lease_s=30, overhead_s=60)
            fleet.expire_deadline(job)
            new = stores[1].claim(job, host="b", lease_s=30, overhead_s=60)
            assert old and new and (old.attempt, new.attempt) == (1, 2)
            results = race([lambda j=job: stores[0].finish(j, 1, _outcome("stale"), 1024),
                            lambda j=job: stores[1].finish(j, 2, _outcome("right"), 1024)])
            assert results == [False, True]
            record = fleet.record(job)
            assert (record.stdout, record.attempt) == ("right", 2)
            assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]

            job = fleet.stored_job("print(1)", timeout_s=1)
            assert stores[0].claim(job, host="a", lease_s=30, overhead_s=60)
            results = race([lambda i=i, j=job: stores[i].finish(j, 1, _outcome("once"), 1024)
                            for i in range(2)])
            assert results == [True, True]  # both say stored; it was stored once
            assert [a.outcome for a in fleet.attempts(job)] == ["finished"]
            assert fleet.record(job).stdout == "once"
    finally:
        for store in stores:
            store.engine.dispose()


def race(calls: list[object]) -> list[object]:
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()  # type: ignore[operator]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
