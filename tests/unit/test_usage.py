"""Usage (tasks/usage.py) gathered by tenant and day, and the Prometheus tenant label kept
bounded (tasks/metrics.py): the busiest by name, the rest summed as "other"."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

from tasks.metrics import TenantCollector, TenantFigures, top_tenants
from tasks.usage import GiB, gather

DAY = date(2026, 12, 6)


def row(tenant: str, verdict: str, jobs: int, cpu_ms: int = 0, wall_ms: int = 0,
        mem: float = 0.0, egress: int = 0, day: date = DAY) -> SimpleNamespace:
    return SimpleNamespace(tenant=tenant, day=day, verdict=verdict, jobs=jobs, cpu_ms=cpu_ms,
                           wall_ms=wall_ms, peak_memory_byte_s=mem, egress_bytes=egress)


def test_rows_by_verdict_become_one_usage_per_tenant_and_day() -> None:
    found = gather([row("a", "ok", 3, 1500, 3000, 2.0 * GiB, 10), row("a", "timeout", 1, 500),
                    row("b", "ok", 1), row("a", "ok", 1, day=date(2026, 12, 5))])
    assert [(u.tenant, u.day.day) for u in found] == [("a", 5), ("a", 6), ("b", 6)]
    a = found[1]
    assert (a.total_jobs, a.jobs, a.cpu_s, a.wall_s) == (4, {"ok": 3, "timeout": 1}, 2.0, 3.0)
    assert a.to_json()["peak_memory_gib_s"] == 2.0 and a.to_json()["egress_bytes"] == 10


def test_the_tenant_label_is_bounded() -> None:
    figures = {f"t{i:03}": TenantFigures(waiting=1, jobs_today=i) for i in range(500)}
    top = top_tenants(figures, 20)
    assert len(top) == 21 and "other" in top and "t499" in top and "t000" not in top
    assert top["other"].jobs_today == sum(range(480)) and top["other"].waiting == 480
    assert top_tenants({"a": TenantFigures(jobs_today=1)}, 20) == {"a": TenantFigures(jobs_today=1)}
    collector = TenantCollector()
    collector.snapshot = top
    samples = [s for family in collector.collect() for s in family.samples]
    assert {s.labels["tenant"] for s in samples} == set(top)
    assert len(samples) == 21 * (2 + 5)
