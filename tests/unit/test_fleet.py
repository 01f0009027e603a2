"""The fleet's pure parts: how status shows a host, what a sweep says is in use, when a drained
host is empty, and which schema a worker refuses (naming both migrations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airlock import fleetview
from tasks.drain import Holding, _answered
from tasks.heartbeat import in_use
from tasks.hosts import HostRow
from tasks.startup import schema_refusal
from workers import labels as L
from workers.reaper import ContainerView

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def host(**changes: object) -> HostRow:
    values: dict[str, object] = dict(
        name="h1", fleet="f", queue="q", engine_id="ID", engine_url="unix:///run/e2.sock",
        engine_version="20.10.24", version="0.1.0", schema_head="0007", concurrency=4,
        pool_size=4, slots_in_use=2, pool_warm=3, drained=False, drained_at=None,
        started_at=NOW - timedelta(hours=1), heartbeat_at=NOW - timedelta(seconds=5), running=2)
    return HostRow(**(values | changes))  # type: ignore[arg-type]


def test_a_host_is_serving_draining_drained_or_silent() -> None:
    assert fleetview.state(host(), NOW, 60) == "serving"
    assert fleetview.state(host(drained=True), NOW, 60) == "draining (2 running)"
    assert fleetview.state(host(drained=True, running=0), NOW, 60) == "drained"
    assert fleetview.state(host(heartbeat_at=NOW - timedelta(seconds=61)), NOW, 60) == "silent"
    assert fleetview.state(host(heartbeat_at=None), NOW, 60) == "silent"


def test_status_says_engine_versions_slots_pool_and_heartbeat() -> None:
    cells = fleetview.cells(host(), NOW, 60)
    assert cells == ("h1", "serving", "20.10.24 /run/e2.sock", "0.1.0", "0007", "2/4 (2 jobs)",
                     "3/4", "5 s ago")
    lines = fleetview.plain([cells])
    assert lines[0].split() == list(fleetview.COLUMNS) and lines[1].split()[:2] == ["h1", "serving"]
    assert fleetview.as_dict(host(), NOW, 60)["heartbeat_age_s"] == 5.0


def test_heartbeat_ages_read_as_people_say_them() -> None:
    assert [fleetview.age_text(s) for s in (None, 3, 600, 10_000)] == [
        "never", "3 s ago", "10 min ago", "3 h ago"]


def test_a_sweep_counts_running_job_containers_and_warm_ones() -> None:
    def view(role: str, running: bool = True, job: str = "") -> ContainerView:
        return ContainerView("c", {L.ROLE: role}, running, job)

    views = [view(L.ROLE_JOB), view(L.ROLE_JOB, running=False), view(L.ROLE_POOL),
             view(L.ROLE_POOL, job="j"), view(L.ROLE_HOLDER)]
    assert in_use(views) == (2, 1)  # a pooled container given a job is a job's


def test_a_host_is_empty_only_when_nothing_runs_and_its_worker_holds_nothing() -> None:
    assert Holding(0, 0, 0).empty and Holding(0, None, None).empty
    assert not Holding(1, 0, 0).empty and not Holding(0, 1, 0).empty
    assert not Holding(0, 0, 1).empty
    assert "did not answer" in Holding(0, None, None).describe()


def test_only_the_addressed_worker_answering_counts() -> None:
    assert _answered([{"airlock@h1": {"ok": "no longer consuming from q"}}], "airlock@h1")
    assert not _answered([{"airlock@h2": {}}], "airlock@h1") and not _answered(None, "airlock@h1")


def test_a_schema_ahead_or_behind_is_refused_naming_both_migrations() -> None:
    ahead = schema_refusal("0009", "0007", known=False)
    behind = schema_refusal("0003", "0007", known=True)
    assert ahead is not None and "0009" in ahead and "0007" in ahead and "ahead" in ahead
    assert behind is not None and "0003" in behind and "0007" in behind
    assert schema_refusal("0007", "0007", known=True) is None


def test_a_sentinel_url_names_its_sentinels_password_and_database() -> None:
    from tasks.streams import sentinels

    found = sentinels("sentinel://:s%40cret@10.0.0.1:26379;sentinel://:s%40cret@10.0.0.2/2")
    assert found.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert found.password == "s@cret" and found.db == 2 and found.username is None
    with pytest.raises(ValueError, match="not a sentinel"):
        sentinels("redis://127.0.0.1:6379/0")


def test_a_sentinel_broker_gets_airlocks_transport_in_its_sentinel_form() -> None:
    from config.settings import Settings
    from tasks.app import celery_config

    s = Settings(broker_url="sentinel://:pw@127.0.0.1:26379;sentinel://:pw@127.0.0.1:26380/0",
                 sentinel_master="main")
    conf = celery_config(s)
    assert conf["broker_transport"] == "tasks.broker:SentinelTransport"
    options = conf["broker_transport_options"]
    assert options["master_name"] == "main" and options["sentinel_kwargs"] == {"password": "pw"}
    assert options["visibility_timeout"] == s.timeouts.visibility_timeout_s
    plain = celery_config(Settings())
    assert plain["broker_transport"] == "tasks.broker:Transport"
    assert "master_name" not in plain["broker_transport_options"]


def test_the_sentinel_transport_screens_what_it_pops() -> None:
    from kombu.transport import redis as kombu_redis

    from tasks import broker

    assert issubclass(broker.SentinelChannel, broker.Channel)
    assert issubclass(broker.SentinelChannel, kombu_redis.SentinelChannel)
    assert broker.SentinelTransport.Channel is broker.SentinelChannel
    # Airlock's client (the screen) over kombu's Sentinel pool.
    assert broker.SentinelChannel._get_client is broker.Channel._get_client
