"""A worker's start, the pure parts: which database answers refuse it at once, which are waited
out, and a schema that does not match its code (tasks/startup.py); the doctor's judgement of
the parts egress needs (airlock/doctor.py)."""

from __future__ import annotations

import pytest

from airlock.doctor import judge_egress_part, judge_redis_memory
from tasks.host_checks import Status
from tasks.startup import database_refusal, schema_refusal

FAILED = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '


@pytest.mark.parametrize(("message", "reason"), [
    (FAILED + 'role "nobody" does not exist', "wrong credentials"),
    (FAILED + 'password authentication failed for user "airlock"', "wrong credentials"),
    (FAILED + 'database "nodb" does not exist', "no such database"),
    (FAILED + 'no pg_hba.conf entry for host "10.1.2.3", user "x", database "y"',
     "this host may not connect (pg_hba.conf)"),
    (FAILED + 'permission denied for database "airlock"', "permission denied"),
])
def test_a_refusal_that_waiting_cannot_change_is_named(message: str, reason: str) -> None:
    said = database_refusal(message)
    assert said is not None and said.startswith(f"{reason}: ")
    assert "\n" not in said and FAILED not in said  # one line: PostgreSQL's own words


@pytest.mark.parametrize("message", [
    'connection failed: connection to server at "127.0.0.1", port 5499 failed: Connection refused'
    "\n\tIs the server running on that host and accepting TCP/IP connections?",
    FAILED + "the database system is starting up",
    FAILED + "sorry, too many clients already",
    FAILED + "the database system is shutting down",
    "timeout expired",
    'could not translate host name "db" to address: Name or service not known',
])
def test_an_outage_is_waited_out(message: str) -> None:
    assert database_refusal(message) is None


def test_the_schema_must_be_the_codes() -> None:
    assert schema_refusal("0002", "0002", known=True) is None
    behind = schema_refusal("0001", "0002", known=True)
    assert behind is not None and "behind" in behind and "airlock db upgrade" in behind
    ahead = schema_refusal("0009", "0002", known=False)
    assert ahead is not None and "ahead" in ahead and "0009" in ahead and "0002" in ahead
    empty = schema_refusal(None, "0002", known=True)
    assert empty is not None and "no schema" in empty


@pytest.mark.parametrize(("problem", "egress", "status"), [
    (None, True, Status.OK), (None, False, Status.OK),
    ("chain AIRLOCK-EGRESS is missing", True, Status.FAIL),
    ("chain AIRLOCK-EGRESS is missing", False, Status.WARN),
])
def test_the_firewall_fails_a_host_only_when_egress_needs_it(
        problem: str | None, egress: bool, status: Status) -> None:
    check = judge_egress_part("firewall", problem, "every rule in place", egress)
    assert check.status is status
    if status is Status.WARN:
        assert problem in check.detail and "egress is off" in check.detail


@pytest.mark.parametrize(("maxmemory", "policy", "status"), [
    (0, "noeviction", Status.WARN),  # unbounded
    (1 << 30, "allkeys-lru", Status.WARN),  # would evict the queue
    (1 << 30, "allkeys-random", Status.WARN),
    (1 << 30, "volatile-lru", Status.OK),  # only keys with an expiry: ended streams
    (1 << 30, "noeviction", Status.OK),
])
def test_the_doctor_wants_redis_bounded_and_the_queue_never_evicted(
        maxmemory: int, policy: str, status: Status) -> None:
    assert judge_redis_memory(maxmemory, policy)[0] is status
