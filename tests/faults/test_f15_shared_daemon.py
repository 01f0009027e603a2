"""F15: the reaper on a Docker daemon shared with other programs removes exactly Airlock's
orphans of its own fleet, and never a foreign container, even one whose labels look alike.

The orphans are made the way a crashed worker leaves them (job containers with Airlock's
labels whose job finished, whose lease ran out, or that PostgreSQL never heard of); the
foreign containers carry no labels, another fleet's, or ours without the managed mark. A
started worker's first sweep (before it says ready) is what cleans up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest

from tests.faults.rig import ENGINE1, ENGINE2, SANDBOX, Engine2, Fleet, wait_for
from workers import labels as L
from workers.spec import job_labels

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@contextmanager
def containers(engine: str) -> Iterator[tuple[docker.APIClient, list[str]]]:
    api = docker.APIClient(base_url=engine, version="auto")
    made: list[str] = []
    try:
        yield api, made
    finally:
        for cid in made:
            try:
                api.remove_container(cid, force=True)
            except docker.errors.APIError:
                pass  # gone already, or its removal by the reaper is in progress
        api.close()


def start(api: docker.APIClient, made: list[str], labels: dict[str, str]) -> str:
    cid = api.create_container(SANDBOX, ["sleep", "300"], labels=labels, network_disabled=True,
                               host_config=api.create_host_config(auto_remove=False))["Id"]
    api.start(cid)
    made.append(cid)
    return str(cid)


def new_job(fleet: Fleet, code: str) -> str:
    return fleet.stored_job(code)


def test_f15_reaper_removes_exactly_airlocks_orphans(fleet: Fleet, engine2: Engine2) -> None:
    s = fleet.settings
    store = fleet.client.store
    now = time.time()

    def ours(job: str, attempt: int = 1, created: float = now) -> dict[str, str]:
        return job_labels(fleet=s.fleet, host=s.hostname, role=L.ROLE_JOB, job=job,
                          attempt=attempt, created=created, deadline=created + 600)

    finished = new_job(fleet, "print(1)")
    store.claim(finished, host=s.hostname, lease_s=30, overhead_s=60)
    fleet.sql("UPDATE jobs SET status = 'finished', verdict = 'ok' WHERE id = :j", j=finished)
    lapsed = new_job(fleet, "print('run again')")
    store.claim(lapsed, host=s.hostname, lease_s=30, overhead_s=60)
    fleet.expire_lease(lapsed)
    live = new_job(fleet, "print(1)")
    store.claim(live, host=s.hostname, lease_s=600, overhead_s=600)

    with containers(ENGINE1) as (api, made), containers(ENGINE2) as (api2, made2):
        orphans = {
            "job finished": start(api, made, ours(finished)),
            "lease expired": start(api, made, ours(lapsed)),
            "unknown job": start(api, made, ours(str(uuid.uuid4()), created=now - 3600)),
            "job label not a uuid": start(api, made, ours("not-a-uuid", created=now - 3600)),
        }
        kept = {
            "live job": start(api, made, ours(live)),
            "no labels": start(api, made, {}),
            "another fleet": start(api, made, ours(finished) | {L.FLEET: "someone-else"}),
            "not managed": start(api, made, {k: v for k, v in ours(finished).items()
                                             if k != L.MANAGED}),
            "managed=false": start(api, made, ours(finished) | {L.MANAGED: "false"}),
            "managed=True": start(api, made, ours(finished) | {L.MANAGED: "True"}),
            "fleet prefix": start(api, made, ours(finished) | {L.FLEET: s.fleet + "-2"}),
        }
        on_engine2 = start(api2, made2, ours(finished))  # ours, but another engine's to reap

        w = fleet.worker()  # its first sweep runs before it says ready
        present = {c["Id"] for c in api.containers(all=True)}
        assert not {k: v for k, v in orphans.items() if v in present}
        assert {k: v for k, v in kept.items() if v not in present} == {}
        assert on_engine2 in {c["Id"] for c in api2.containers(all=True)}
        assert w.log().count("reaper.removed") == len(orphans)

        # The lapsed job was released and sent again; the live one's container is kept until
        # its job ends, then the next sweep takes it.
        record = fleet.wait(lapsed, 30)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "run again\n", 2)
        assert [a.outcome for a in fleet.attempts(lapsed)] == ["lost", "finished"]
        assert kept["live job"] in {c["Id"] for c in api.containers(all=True)}
        fleet.sql("UPDATE jobs SET status = 'finished', verdict = 'cancelled' WHERE id = :j",
                  j=live)
        wait_for("the live job's container to go once its job ended",
                 lambda: kept["live job"] not in {c["Id"] for c in api.containers(all=True)}, 10)
        foreign = {v for k, v in kept.items() if k != "live job"}
        assert foreign <= {c["Id"] for c in api.containers(all=True)}
