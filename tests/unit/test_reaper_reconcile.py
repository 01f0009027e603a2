"""The reconciler's decision (tasks/maintenance.needs_requeue): pure, given where the broker
holds a job's message and when it was delivered; and its reading of a broker that also holds
items anyone could have written there (broker_holdings)."""

from __future__ import annotations

import json

from tasks.maintenance import ORPHANED_DELIVERY_S, QUEUED, broker_holdings, needs_requeue
from tests.poison import poisons, task_message

NOW = 1_000_000.0
AFTER = 30.0


def decide(status: str, held: float | None) -> bool:
    return needs_requeue(status, held, now=NOW, reconcile_after_s=AFTER)


def test_a_job_the_broker_lost_is_sent_again() -> None:
    assert decide("queued", None) and decide("running", None)


def test_a_message_waiting_in_the_queue_is_trusted() -> None:
    assert not decide("queued", QUEUED) and not decide("running", QUEUED)


def test_a_recent_delivery_of_a_queued_job_is_trusted() -> None:
    assert not decide("queued", NOW - 5)
    assert not decide("queued", NOW - AFTER - ORPHANED_DELIVERY_S + 1)


def test_an_old_delivery_of_a_queued_job_is_presumed_orphaned() -> None:
    # Its consumer was SIGKILLed: kombu would restore it only after the visibility timeout.
    assert decide("queued", NOW - AFTER - ORPHANED_DELIVERY_S - 1)


def test_a_stale_running_jobs_delivery_is_never_trusted() -> None:
    # Lease expired and run deadline passed: whoever holds the message is not running it.
    assert decide("running", NOW - 1)


class FakeBroker:
    """The three structures broker_holdings reads, as a Redis client answers for them."""

    def __init__(self, queue: list[bytes], unacked: dict[bytes, bytes], scores: dict[bytes, float]):
        self.queue, self.unacked, self.scores = queue, unacked, scores

    def zrange(self, key: str, start: int, end: int, withscores: bool) -> list[tuple[bytes, float]]:
        return list(self.scores.items())

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return self.unacked

    def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return self.queue


def test_the_reconciler_reads_past_items_that_are_not_kombus() -> None:
    job, other = "6f1c2d44-1111-4222-8333-444455556666", "0a1b2c3d-1111-4222-8333-444455556666"
    delivered = json.dumps([json.loads(task_message("q", [other])), "", "q"]).encode()
    queue = [p.raw for p in poisons("q")] + [task_message("q", [job])]
    unacked = {b"tag": delivered, b"\xff\xfe": b"[" * 100_000, b"junk": b"not json",
               b"short": b"[1]"}
    scores = {b"tag": 500.0, b"\xff\xfe": 1.0, b"junk": 2.0}
    held = broker_holdings(FakeBroker(queue, unacked, scores), "q")  # type: ignore[arg-type]
    assert held[job] == QUEUED and held[other] == 500.0
