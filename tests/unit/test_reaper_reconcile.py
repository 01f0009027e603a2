"""The reconciler's decision (tasks/maintenance.needs_requeue): pure, given where the broker
holds a job's message and when it was delivered."""

from __future__ import annotations

from tasks.maintenance import ORPHANED_DELIVERY_S, QUEUED, needs_requeue

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
