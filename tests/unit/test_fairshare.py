"""Fair share's choice (tasks/fairshare.py): weighted max-min over the slots in flight, each
tenant in its own submission order, max_in_flight kept; and first come, first served."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.fairshare import TenantState, Waiting, choose, free_slots

T0 = datetime(2026, 12, 6, tzinfo=UTC)


def tenant(name: str, n: int, *, start: int = 0, weight: float = 1.0, in_flight: int = 0,
           max_in_flight: int | None = None) -> TenantState:
    return TenantState(name, weight, in_flight, max_in_flight,
                       [Waiting(f"{name}{i}", T0 + timedelta(seconds=start + i)) for i in range(n)])


def ids(chosen: list[Waiting]) -> list[str]:
    return [w.job_id for w in chosen]


def test_a_newcomer_gets_the_next_slot_over_a_flood() -> None:
    a = tenant("a", 300, in_flight=4)  # holds the four slots, 300 more waiting
    b = tenant("b", 10, start=1000, in_flight=0)  # submitted after all of a's
    assert ids(choose([a, b], 1)) == ["b0"]


def test_slots_split_evenly_then_by_age() -> None:
    a, b = tenant("a", 10), tenant("b", 10, start=100)
    assert ids(choose([a, b], 4)) == ["a0", "b0", "a1", "b1"]


def test_weights_share_in_proportion() -> None:
    a, b = tenant("a", 30, weight=2.0), tenant("b", 30, start=100, weight=1.0)
    picked = ids(choose([a, b], 9))
    assert sum(p.startswith("a") for p in picked) == 6 and sum(p.startswith("b") for p in picked) == 3


def test_each_tenants_jobs_go_in_submission_order() -> None:
    a, b = tenant("a", 5), tenant("b", 5, start=2)
    picked = ids(choose([a, b], 10))
    assert [p for p in picked if p.startswith("a")] == ["a0", "a1", "a2", "a3", "a4"]
    assert [p for p in picked if p.startswith("b")] == ["b0", "b1", "b2", "b3", "b4"]


def test_max_in_flight_holds_and_the_rest_go_to_others() -> None:
    a = tenant("a", 10, in_flight=1, max_in_flight=2)
    b = tenant("b", 2, start=100)
    assert ids(choose([a, b], 6)) == ["b0", "a0", "b1"]  # a stops at 2, b runs out


def test_a_lone_tenant_takes_every_free_slot() -> None:
    assert ids(choose([tenant("a", 3, in_flight=9)], 5)) == ["a0", "a1", "a2"]


def test_first_come_first_served_when_fair_share_is_off() -> None:
    a = tenant("a", 300, in_flight=4)
    b = tenant("b", 10, start=1000)
    assert ids(choose([a, b], 3, fair=False)) == ["a0", "a1", "a2"]
    limited = tenant("a", 3, max_in_flight=1)
    assert ids(choose([limited, tenant("b", 2, start=50)], 3, fair=False)) == ["a0", "b0", "b1"]


def test_free_slots() -> None:
    assert free_slots(4, 3) == 1 and free_slots(4, 6) == 0 and free_slots(4, 4, headroom=2) == 2
    assert free_slots(0, 0) == 0  # no live host: nothing admitted
