"""F19: a malformed message in the broker is set aside, logged, and skipped; the worker serves on.

Whoever can write to the broker can push anything onto the queue's Redis list. Each kind of
item a worker cannot take is pushed here, each followed by a normal job, while the worker is
busy: all of them wait in the list, in that order, and reach the worker one after the other.
The same worker process must run every job, and keep every refused item in the dead-letter
list ``airlock:dead:<queue>`` with the reason it gives.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from airlock.records import JobRecord
from tests.faults.conftest import MakeRedis
from tests.faults.rig import Fleet, wait_for
from tests.poison import poisons
from tests.services import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def dead_letters(fleet: Fleet) -> list[dict[str, Any]]:
    """The dead-letter list of the fleet's queue, oldest first."""
    items = fleet.client.redis.lrange(f"airlock:dead:{fleet.settings.queue}", 0, -1)
    return [json.loads(item) for item in reversed(items)]


def finished(fleet: Fleet, w: WorkerProcess, job: str, timeout: float = 90) -> JobRecord:
    """The job's record once stored; fails at once, saying why, if the worker process ended."""
    def done() -> bool:
        assert w.proc is not None and w.proc.poll() is None, \
            f"the worker exited ({w.proc and w.proc.returncode}):\n{w.log()[-2500:]}"
        return bool(fleet.sql("SELECT 1 FROM jobs WHERE id = :j AND status = 'finished'", j=job))
    wait_for(f"job {job} to finish", done, timeout, 0.2)
    return fleet.record(job)


def test_f19_poison_items_are_set_aside_and_the_jobs_behind_them_run(fleet: Fleet) -> None:
    fleet.configure(admission_headroom=100)  # each job's message sent at once, behind a poison
    w = fleet.worker()
    pid, r, queue = w.pid, fleet.client.redis, fleet.settings.queue
    kinds = poisons(queue)
    # Given a busy worker (concurrency 1, one message at a time): the rest wait in the list.
    blocker = fleet.submit("import time; time.sleep(3)")
    fleet.running_container(blocker)
    # When each kind of poison is pushed, a normal job behind each one.
    jobs = []
    for poison in kinds:
        r.lpush(queue, poison.raw)
        jobs.append(fleet.submit(f"print({poison.name!r})"))
    assert r.llen(queue) == 2 * len(kinds)
    # Then every job runs, in the same worker process.
    for poison, job in zip(kinds, jobs, strict=True):
        record = finished(fleet, w, job)
        assert (record.verdict, record.stdout) == ("ok", f"{poison.name}\n"), (poison, record)
    assert finished(fleet, w, blocker).verdict == "ok"
    assert w.proc is not None and w.proc.poll() is None and w.pid == pid, w.log()[-3000:]
    # And each item is kept aside, with when and why.
    dead = dead_letters(fleet)
    assert len(dead) == len(kinds), [d["reason"] for d in dead]
    for poison, entry in zip(kinds, dead, strict=True):
        assert poison.reason in entry["reason"], (poison.name, entry["reason"])
        assert entry["queue"] == queue and time.time() - 600 < entry["at"] <= time.time()
        kept = base64.b64decode(entry["payload_b64"])
        if kept == poison.raw[:len(kept)]:  # the item's bytes, up to the cap
            assert entry["size"] == len(poison.raw)
        else:  # a message kombu parsed: its JSON again
            assert json.loads(kept) == json.loads(poison.raw), poison.name
    # A second normal job still runs; nothing is left behind in the broker.
    after = finished(fleet, w, fleet.submit("print('after')"))
    assert (after.verdict, after.stdout) == ("ok", "after\n")
    assert r.llen(queue) == 0
    wait_for("no delivery of this queue left unacknowledged",
             lambda: not [v for v in r.hgetall("unacked").values() if queue.encode() in v], 10)
    assert "Unrecoverable error" not in w.log()
    assert w.proc.poll() is None and w.pid == pid


def test_f19_a_poison_entry_among_the_unacknowledged_is_set_aside(
        fleet: Fleet, make_redis: MakeRedis) -> None:
    # kombu's unacknowledged hash is one per Redis database: this poison gets a Redis of its own.
    server = make_redis(appendonly=False)
    fleet.configure(broker_url=server.url, redis_url=server.url, reconcile_after_s=3600.0,
                    admission_headroom=1)  # its message sent before any worker runs
    r, queue = fleet.client.redis, fleet.settings.queue
    # Given a job's message delivered to a worker that died (kombu restores it once past the
    # visibility timeout), and beside it, newer, an entry that is not kombu's.
    job = fleet.submit("print('restored')")
    message = json.loads(r.rpop(queue))
    tag, long_ago = message["properties"]["delivery_tag"], time.time() - 10_000
    r.hset("unacked", tag, json.dumps([message, "", queue]))
    r.zadd("unacked_index", {tag: long_ago})
    r.hset("unacked", "poison", b"\x1b]52;c;bm90IGpzb24=\x07 not json")
    r.zadd("unacked_index", {"poison": long_ago + 1})
    # When a worker starts (kombu restores what is past the visibility timeout, at once).
    w = fleet.worker()
    # Then the job is restored and runs; the entry is set aside; the worker serves on.
    record = finished(fleet, w, job)
    assert (record.verdict, record.stdout) == ("ok", "restored\n")
    [entry] = [json.loads(item) for item in r.lrange("airlock:dead:unacked", 0, -1)]
    assert entry["queue"] == "unacked" and "not JSON" in entry["reason"], entry
    assert not r.hexists("unacked", "poison") and r.zscore("unacked_index", "poison") is None
    after = finished(fleet, w, fleet.submit("print('after')"))
    assert (after.verdict, after.stdout) == ("ok", "after\n")
