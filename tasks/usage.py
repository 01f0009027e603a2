"""What tenants used, per day (UTC): jobs by verdict, CPU-, wall- and peak-memory-seconds,
egress bytes. Read from ``usage_days``, which each job's end adds to (a trigger, migration
0008): it outlives the jobs retention deletes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.metrics import TenantFigures
from tasks.models import UsageDay
from tasks.store import connected

GiB = 1024**3


@dataclass(slots=True)
class Usage:
    tenant: str
    day: date
    jobs: dict[str, int] = field(default_factory=dict)  # by verdict
    cpu_s: float = 0.0
    wall_s: float = 0.0
    peak_memory_gib_s: float = 0.0
    egress_bytes: int = 0

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "day": self.day.isoformat(), "jobs": self.total_jobs,
                "by_verdict": dict(sorted(self.jobs.items())), "cpu_s": round(self.cpu_s, 3),
                "wall_s": round(self.wall_s, 3),
                "peak_memory_gib_s": round(self.peak_memory_gib_s, 3),
                "egress_bytes": self.egress_bytes}


def gather(rows: Sequence[Any]) -> list[Usage]:
    """Pure: ``usage_days`` rows (by verdict) into one Usage per tenant and day."""
    out: dict[tuple[str, date], Usage] = {}
    for r in rows:
        u = out.setdefault((r.tenant, r.day), Usage(r.tenant, r.day))
        u.jobs[r.verdict] = u.jobs.get(r.verdict, 0) + r.jobs
        u.cpu_s += r.cpu_ms / 1000
        u.wall_s += r.wall_ms / 1000
        u.peak_memory_gib_s += r.peak_memory_byte_s / GiB
        u.egress_bytes += r.egress_bytes
    return sorted(out.values(), key=lambda u: (u.day, u.tenant))


def usage(engine: Engine, *, tenant: str | None = None, since: date | None = None,
          until: date | None = None) -> list[Usage]:
    query = sa.select(UsageDay.__table__)
    if tenant is not None:
        query = query.where(UsageDay.tenant == tenant)
    if since is not None:
        query = query.where(UsageDay.day >= since)
    if until is not None:
        query = query.where(UsageDay.day <= until)
    with connected(engine.connect) as conn:
        return gather(conn.execute(query).all())


def totals_by_tenant(engine: Engine, day: date) -> dict[str, Usage]:
    """Each tenant's usage of one day (Prometheus reads today's)."""
    return {u.tenant: u for u in usage(engine, since=day, until=day)}


JOBS_NOW = sa.text(
    "SELECT tenant, count(*) FILTER (WHERE status = 'queued' AND admitted_at IS NULL)::int"
    " AS waiting, count(*) FILTER (WHERE status = 'running' OR admitted_at IS NOT NULL)::int"
    " AS in_flight FROM jobs WHERE status <> 'finished' GROUP BY tenant")


def figures(engine: Engine, today: date) -> dict[str, TenantFigures]:
    """Each tenant's jobs now and usage today, for Prometheus (tasks/metrics.py)."""
    used = totals_by_tenant(engine, today)
    with connected(engine.connect) as conn:
        now = {r.tenant: (r.waiting, r.in_flight) for r in conn.execute(JOBS_NOW)}
    out = {}
    for tenant in used.keys() | now.keys():
        u = used.get(tenant, Usage(tenant, today))
        waiting, in_flight = now.get(tenant, (0, 0))
        out[tenant] = TenantFigures(waiting, in_flight, u.total_jobs, u.cpu_s, u.wall_s,
                                    u.peak_memory_gib_s, u.egress_bytes)
    return out
