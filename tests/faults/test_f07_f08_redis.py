"""F7/F8: Redis killed (SIGKILL) and restarted, with and without persistence, and jobs that
PostgreSQL has but the broker lost. Each test runs a redis-server of its own on a free port
(the machine's Redis is never touched) as both the broker and the live-output store.

With the append-only file on (fsync every second), queued messages survive the crash and the
workers resume consuming; without it they are gone and the reconciler re-enqueues them from
PostgreSQL, the source of truth.
"""

from __future__ import annotations

import time

import pytest

from tasks.maintenance import requeue_key
from tests.faults.conftest import MakeRedis
from tests.faults.rig import Fleet, RedisServer, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def busy_then_queued(fleet: Fleet) -> tuple[str, list[str]]:
    """One job running (the only slot) and three waiting in the broker's queue list (admitted
    beyond the free slots: the fleet's admission headroom is set for it)."""
    running = fleet.submit(
        f"import time; time.sleep(max(0, {time.time() + 6} - time.time())); print('r')",
        timeout_s=30)
    fleet.running_container(running)
    queued = [fleet.submit(f"print('q{i}')") for i in range(3)]
    wait_for("the jobs to wait in the queue",
             lambda: all(fleet.broker_holds(j) == "queue" for j in queued), 10)
    return running, queued


def crash_and_restart(redis: RedisServer) -> None:
    time.sleep(1.5)  # the append-only file is fsynced every second
    redis.kill()
    time.sleep(1.0)
    redis.start()


def test_f7_redis_with_persistence_keeps_queued_jobs(fleet: Fleet, make_redis: MakeRedis) -> None:
    redis = make_redis(appendonly=True)
    fleet.configure(broker_url=redis.url, redis_url=redis.url, admission_headroom=5)
    w = fleet.worker()
    running, queued = busy_then_queued(fleet)
    crash_and_restart(redis)
    # Straight after the restart the broker still holds every queued message.
    held = {j: fleet.broker_holds(j) for j in queued}
    assert all(held.values()), held
    fresh = fleet.submit("print('fresh')")  # consuming resumed: a job sent after the crash runs
    for job in [running, *queued, fresh]:
        record = fleet.wait(job, 60)
        assert record.verdict == "ok" and record.attempt == 1, record
    assert "reconciler.requeue" not in w.log()  # the broker kept them, nobody had to
    assert not fleet.leftovers()


def test_f8_redis_without_persistence_the_reconciler_re_enqueues(
        fleet: Fleet, make_redis: MakeRedis) -> None:
    redis = make_redis(appendonly=False)
    fleet.configure(broker_url=redis.url, redis_url=redis.url, admission_headroom=5)
    w = fleet.worker()
    running, queued = busy_then_queued(fleet)
    crash_and_restart(redis)
    # The broker lost them. The reconciler (every second) may already have sent one again right
    # after the restart (seen in CI: 30 ms after it), which it does only for a queued job the
    # broker no longer holds, marking it first: a message held now must carry that mark.
    r = fleet.client.redis
    assert not any(fleet.broker_holds(j) and not r.exists(requeue_key(j)) for j in queued)
    fresh = fleet.submit("print('fresh')")
    for job in [running, *queued, fresh]:
        record = fleet.wait(job, 60)
        assert record.verdict == "ok" and record.attempt == 1, record
    requeues = [line for line in w.log().splitlines() if "reconciler.requeue" in line]
    assert all(any(j in line for line in requeues) for j in queued), requeues
    assert not fleet.leftovers()


def test_f8_jobs_submitted_while_redis_is_down_are_enqueued_by_the_reconciler(
        fleet: Fleet, make_redis: MakeRedis) -> None:
    redis = make_redis(appendonly=True)
    fleet.configure(broker_url=redis.url, redis_url=redis.url)
    w = fleet.worker()
    redis.kill()
    # PostgreSQL records it; the enqueue fails (logged, not raised; it takes kombu about 6 s
    # to give up): the broker never had the job.
    job = fleet.submit("print('submitted while Redis was down')")
    assert fleet.record(job).status == "queued"
    redis.start()
    record = fleet.wait(job, 60)
    assert record.verdict == "ok" and record.attempt == 1, record
    assert "reconciler.requeue" in w.log() and job in w.log()
    assert not fleet.leftovers()
