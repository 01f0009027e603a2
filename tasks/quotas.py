"""A tenant's quotas, and what each refuses. Pure: the counts come from the store.

A tenant's own value (``airlock tenant set-quota``) overrides the fleet's default (settings,
the tenancy section); None is no quota. Refusals store nothing: a submission over a quota is
refused whole, in the transaction that would have recorded it (``tasks/submission.py``).

- ``max_queued``: jobs waiting their turn (queued, not yet admitted), at most: only a
  submission adds one, so it holds at every instant (a job handed back after its worker died
  is in flight, not waiting);
- ``submissions_per_min``: jobs recorded in the current minute (UTC), at most;
- ``cpu_s_per_day``: CPU-seconds of the day's (UTC) ended jobs; at or past it nothing more is
  taken that day (the jobs running then still end: a day may end past it by their CPU);
- ``max_in_flight``: jobs admitted or running at once (the admission keeps to it; a job over
  it waits, it is not refused);
- ``max_limits``: what each limit may ask for, at or below the fleet's maximums (a job asking
  more is invalid, naming the limit; one that leaves it to the fleet's default gets the
  tenant's maximum when that is lower).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from base.errors import JobSpecError, QuotaExceeded
from base.limits import LIMITS
from config.sections import Tenancy

QUOTAS = ("max_in_flight", "max_queued", "submissions_per_min", "cpu_s_per_day")


@dataclass(frozen=True, slots=True)
class Quota:
    tenant: str
    weight: float = 1.0
    max_in_flight: int | None = None
    max_queued: int | None = None
    submissions_per_min: int | None = None
    cpu_s_per_day: int | None = None
    max_limits: dict[str, float] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        """Whether a submission must be counted against this quota (else it is just stored)."""
        return any(v is not None for v in (self.max_queued, self.submissions_per_min,
                                           self.cpu_s_per_day))


def effective(tenant: str, row: dict[str, Any], defaults: Tenancy) -> Quota:
    """The tenant's quota: its row's values, else the fleet's defaults."""
    own = {name: row.get(name) for name in QUOTAS}
    return Quota(tenant=tenant, weight=float(row.get("weight") or 1.0),
                 max_limits=dict(row.get("max_limits") or {}),
                 **{name: own[name] if own[name] is not None else getattr(defaults, name)
                    for name in QUOTAS})


def check_max_limits(maxima: dict[str, Any]) -> dict[str, float]:
    """Validated per-limit maxima: known limit names, finite numbers within the fleet's range."""
    known = {info.name: info for info in LIMITS}
    out: dict[str, float] = {}
    for name, value in maxima.items():
        info = known.get(name)
        if info is None:
            raise JobSpecError(f"max_limits.{name}", f"no such limit (one of {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not info.minimum <= value <= info.maximum:
            raise JobSpecError(f"max_limits.{name}",
                               f"{value!r} is outside the allowed range {info.minimum}..{info.maximum}")
        if info.kind is int and value != int(value):
            raise JobSpecError(f"max_limits.{name}", f"{value!r} is not a whole number")
        out[name] = info.kind(value)
    return out


def limit_refusal(quota: Quota, limits: dict[str, Any]) -> JobSpecError | None:
    """The first limit the job asks above its tenant's maximum, as a contract error."""
    for name, most in sorted(quota.max_limits.items()):
        asked = limits.get(name)
        if asked is not None and asked > most:
            return JobSpecError(f"limits.{name}",
                                f"{asked:g} is above tenant {quota.tenant}'s maximum of {most:g}")
    return None


def lowered_defaults(quota: Quota, resolved: dict[str, Any]) -> dict[str, float]:
    """The limits a job left to the fleet's defaults that its tenant's maxima lower."""
    return {name: most for name, most in sorted(quota.max_limits.items())
            if resolved.get(name) is not None and resolved[name] > most}


@dataclass(frozen=True, slots=True)
class Counts:
    """A tenant's counts as one submission sees them (its own included)."""

    queued: int  # waiting their turn, this submission included
    this_minute: int  # recorded in the current minute, this submission included
    cpu_ms_today: int  # of the jobs that ended today


def refusal(quota: Quota, counts: Counts, now: datetime) -> QuotaExceeded | None:
    """The first quota this submission goes over, with when to try again."""
    t = quota.tenant
    if quota.submissions_per_min is not None and counts.this_minute > quota.submissions_per_min:
        wait = 60 - now.second - now.microsecond / 1e6
        return QuotaExceeded(f"tenant {t}: at most {quota.submissions_per_min} submissions a"
                             f" minute", retry_after_s=max(1.0, wait), quota="submissions_per_min")
    if quota.max_queued is not None and counts.queued > quota.max_queued:
        return QuotaExceeded(f"tenant {t}: at most {quota.max_queued} jobs waiting their turn;"
                             f" try again once some have started", quota="max_queued")
    if quota.cpu_s_per_day is not None and counts.cpu_ms_today >= quota.cpu_s_per_day * 1000:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return QuotaExceeded(f"tenant {t}: its {quota.cpu_s_per_day} CPU-seconds for today"
                             f" (UTC) are used", retry_after_s=(midnight - now).total_seconds(),
                             quota="cpu_s_per_day")
    return None
