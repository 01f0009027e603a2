"""F0: the timeouts are ordered, and a setting that breaks the order is refused.

    container deadline < Celery soft time limit < hard time limit < broker visibility timeout

The container deadline is the longest a job container can live after its claim: its launcher
waits at most startup_grace_s for the payload, then kills everything backstop_s after the
job's own timeout, even if the worker died. Pure: no services needed.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings
from tasks.app import celery_config
from tasks.contract import resolve
from tasks.planning import claim_overhead_s, payload_for
from tests.launcher_frame import decode

pytestmark = [pytest.mark.faults]


def order(s: Settings) -> list[float]:
    return [s.container_deadline_s, s.soft_time_limit_s, s.hard_time_limit_s,
            s.timeouts.visibility_timeout_s]


def test_f0_default_timeouts_are_ordered() -> None:
    s = Settings()
    assert order(s) == sorted(order(s)) and len(set(order(s))) == 4
    assert order(s) == [665.0, 740.0, 770.0, 900.0]
    # The soft margin covers waiting out a database outage during the result write.
    assert s.timeouts.soft_margin_s > s.timeouts.lease_s + s.timeouts.lease_grace_s
    assert s.maximums.timeout_s < s.container_deadline_s


def test_f0_celery_gets_the_ordered_limits() -> None:
    s = Settings()
    conf = celery_config(s)
    assert conf["task_soft_time_limit"] == s.soft_time_limit_s
    assert conf["task_time_limit"] == s.hard_time_limit_s
    assert conf["broker_transport_options"]["visibility_timeout"] == s.timeouts.visibility_timeout_s
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]


def test_f0_the_longest_job_fits_its_container_deadline_and_run_deadline() -> None:
    s = Settings()
    _, job = resolve({"code": "print(1)", "limits": {"timeout_s": s.maximums.timeout_s}}, s)
    deadline_s = decode(payload_for(job, s)).deadline_s
    assert deadline_s == s.maximums.timeout_s + s.timeouts.backstop_s  # the launcher's own kill
    assert s.timeouts.startup_grace_s + deadline_s == s.container_deadline_s
    # The attempt's run deadline (claim + overhead + the job's timeout) outlasts the container,
    # so a takeover after it can never meet the previous attempt's job still running.
    assert claim_overhead_s(s) + s.maximums.timeout_s > s.container_deadline_s


@pytest.mark.parametrize("change", [
    {"visibility_timeout_s": 760.0},  # below the hard limit: Redis would redeliver a running job
    {"visibility_timeout_s": 770.0},
    {"maximums": {"timeout_s": 900.0, "cpus": 2.0}},  # the longest job outgrows the rest
    {"startup_grace_s": 300.0},
    {"hard_margin_s": 200.0},
])
def test_f0_a_setting_that_breaks_the_order_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="timeouts out of order"):
        Settings(**change)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["backstop_s", "soft_margin_s", "hard_margin_s",
                                  "startup_grace_s", "lease_s", "shutdown_grace_s"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_f0_margins_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValidationError):
        Settings(**{name: value})  # type: ignore[arg-type]


def test_f0_settings_from_the_environment_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_VISIBILITY_TIMEOUT_S", "600")
    with pytest.raises(ValidationError, match="timeouts out of order"):
        Settings()
