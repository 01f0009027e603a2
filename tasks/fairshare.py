"""Which waiting jobs take the fleet's free slots. Pure: ``tasks/admission.py`` reads the
waiting and in-flight jobs, calls ``choose``, and admits what it returns.

Fair share: each free slot goes to the tenant with the fewest jobs in flight for its weight
(in flight: admitted or running), among those with a job waiting and room under their
``max_in_flight``; a tie goes to the tenant whose waiting job is oldest. A tenant's own jobs
go in its submission order. So a tenant with 1,000 waiting jobs holds its weight's share of
the slots while another has jobs to run, and all of them once it is alone; a tenant that
submits 5 gets the next free slot. This is weighted max-min fairness over the slots in use,
recomputed at each admission: there is no per-tenant credit to lose when a worker dies.

First come, first served (fair share off): the oldest waiting job, whoever's, with room under
its tenant's ``max_in_flight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Waiting:
    job_id: str
    queued_at: datetime


@dataclass(slots=True)
class TenantState:
    """One tenant as the admission sees it."""

    tenant: str
    weight: float
    in_flight: int
    max_in_flight: int | None
    waiting: list[Waiting] = field(default_factory=list)  # oldest first

    def has_room(self) -> bool:
        return bool(self.waiting) and (self.max_in_flight is None
                                       or self.in_flight < self.max_in_flight)


def free_slots(capacity: int, in_flight: int, headroom: int = 0) -> int:
    """Slots to fill now: the fleet's capacity (plus headroom) less what is in flight."""
    return max(0, capacity + headroom - in_flight)


def choose(tenants: list[TenantState], free: int, *, fair: bool = True) -> list[Waiting]:
    """The jobs to admit, in the order to send them: at most ``free``. ``tenants`` is
    consumed (their waiting lists and counts advance as jobs are chosen)."""
    chosen: list[Waiting] = []
    while len(chosen) < free:
        ready = [t for t in tenants if t.has_room()]
        if not ready:
            break
        if fair:
            pick = min(ready, key=lambda t: (t.in_flight / t.weight, t.waiting[0].queued_at,
                                             t.tenant))
        else:
            pick = min(ready, key=lambda t: (t.waiting[0].queued_at, t.waiting[0].job_id))
        chosen.append(pick.waiting.pop(0))
        pick.in_flight += 1
    return chosen
