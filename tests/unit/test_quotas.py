"""Quotas (tasks/quotas.py): a tenant's own over the fleet's default, each refusal at its
edge with when to try again, and per-limit maxima as contract errors naming the limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from base.errors import JobSpecError
from config.sections import Tenancy
from tasks.quotas import Counts, Quota, check_max_limits, effective, limit_refusal, refusal

NOW = datetime(2026, 12, 6, 13, 45, 20, tzinfo=UTC)


def test_a_tenants_own_value_overrides_the_default() -> None:
    defaults = Tenancy(tenant_max_queued=100, tenant_submissions_per_min=60)
    q = effective("a", {"weight": 2.0, "max_queued": 5, "max_limits": {"cpus": 1}}, defaults)
    assert (q.weight, q.max_queued, q.submissions_per_min, q.max_in_flight) == (2.0, 5, 60, None)
    assert q.max_limits == {"cpus": 1} and q.counted
    assert not effective("b", {}, Tenancy()).counted  # nothing to count: a plain insert


@pytest.mark.parametrize(("quota", "counts", "refused", "after"), [
    (Quota("a", submissions_per_min=10), Counts(1, 10, 0), None, None),
    (Quota("a", submissions_per_min=10), Counts(1, 11, 0), "submissions_per_min", 39.0),
    (Quota("a", max_queued=3), Counts(3, 1, 0), None, None),
    (Quota("a", max_queued=3), Counts(4, 1, 0), "max_queued", None),
    (Quota("a", cpu_s_per_day=60), Counts(1, 1, 59_999), None, None),
    (Quota("a", cpu_s_per_day=60), Counts(1, 1, 60_000), "cpu_s_per_day", 36880.0),
])
def test_each_quota_refuses_just_past_its_edge(quota: Quota, counts: Counts, refused: str | None,
                                               after: float | None) -> None:
    found = refusal(quota, counts, NOW)
    if refused is None:
        assert found is None
        return
    assert found is not None and found.quota == refused and "tenant a" in str(found)
    assert found.retry_after_s == (pytest.approx(after, abs=1) if after is not None else None)


def test_a_limit_above_the_tenants_maximum_names_the_limit() -> None:
    q = Quota("a", max_limits={"cpus": 1.0, "memory_bytes": 512 << 20})
    assert limit_refusal(q, {"cpus": 1.0, "memory_bytes": 256 << 20}) is None
    refused = limit_refusal(q, {"cpus": 2.0, "memory_bytes": 256 << 20})
    assert refused is not None and refused.field == "limits.cpus"
    assert "tenant a's maximum of 1" in str(refused)


@pytest.mark.parametrize("maxima", [{"cpu": 1}, {"cpus": 3}, {"cpus": float("nan")},
                                    {"cpus": True}, {"timeout_s": "10"}, {"pids": 0}])
def test_maxima_are_limits_within_the_fleets_range(maxima: dict[str, object]) -> None:
    with pytest.raises(JobSpecError) as refused:
        check_max_limits(maxima)  # type: ignore[arg-type]
    assert refused.value.field.startswith("max_limits.")
