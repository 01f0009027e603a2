"""No single Redis: the broker and the live streams reach Redis through Sentinel, and a
failover while jobs flow loses no job, and a reader following a job's output across it gets
every byte once, in order.

A primary and a replica on loopback ports with three Sentinels (tests/fleet/sentinels.py);
one worker and the client given only sentinel:// URLs. Mid-run the primary is SIGKILLed;
the Sentinels promote the replica within seconds and every client finds it through them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tasks.streams import STORED, Cursor, Event
from tests.faults.rig import Fleet, wait_for
from tests.fleet.sentinels import MASTER, SentinelSet

pytestmark = [pytest.mark.fleet, pytest.mark.integration]
JOBS = 60
TICKS = 60  # the followed job prints a line every 0.25 s: 15 s, across the failover


def code(i: int) -> str:
    return f"import time; time.sleep({0.1 + (i % 5) / 10:.1f}); print('job {i}')"


TICKING = ("import sys, time\n"
           f"for i in range({TICKS}):\n"
           "    print(f'tick {i:03d}', flush=True); time.sleep(0.25)\n")


def test_a_sentinel_failover_while_jobs_flow(control_plane: Fleet, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sentinels = SentinelSet(tmp_path).start()
    try:
        line = run(control_plane, sentinels)
    finally:
        sentinels.stop()
    with capsys.disabled():
        print("\n" + line)


def run(fleet: Fleet, sentinels: SentinelSet) -> str:
    s = fleet.configure(broker_url=sentinels.url, redis_url=sentinels.url,
                        sentinel_master=MASTER, reconcile_after_s=3.0)
    worker = fleet.worker("sentinel", hostname=f"sentinel-{s.fleet[-8:]}")
    first = sentinels.primary_port()
    assert first == sentinels.primary.port

    followed = fleet.client.submit({"code": TICKING, "limits": {"timeout_s": 60}})
    seen: list[Event] = []
    reader = threading.Thread(target=lambda: seen.extend(followed.events()), daemon=True)
    reader.start()
    jobs: dict[str, int] = {}
    t0 = time.monotonic()
    for i in range(JOBS):
        jobs[fleet.submit(code(i), timeout_s=20)] = i
        if i == JOBS // 3:
            wait_for("the followed job's first lines", lambda: len(seen) >= 8, 30)
            sentinels.kill_primary()
            killed = time.monotonic()
            wait_for("the Sentinels to promote the replica",
                     lambda: sentinels.primary_port() not in (None, first), 30, 0.1)
            promoted = sentinels.primary_port()
            failover_s = time.monotonic() - killed
        time.sleep(0.15)
    wait_for("every job to finish", lambda: finished(fleet) >= JOBS + 1, 180, 0.5)
    reader.join(60)
    assert not reader.is_alive(), "the reader did not reach the followed job's end"

    rows = fleet.sql("SELECT id::text, status, verdict, stdout FROM jobs")
    assert len(rows) == JOBS + 1 and all(r[1] == "finished" for r in rows)  # lost 0
    for job, _, verdict, stdout in rows:
        if job in jobs:
            assert verdict == "ok" and bytes(stdout) == f"job {jobs[job]}\n".encode(), job
    finished_attempts = Counter(r[0] for r in fleet.sql(
        "SELECT job_id::text FROM attempts WHERE outcome = 'finished'"))
    assert set(finished_attempts.values()) == {1}  # each job's result written once

    live_after, skipped = follower(seen)

    # A job after the failover streams live from the new primary.
    after = fleet.client.submit({"code": "print('after', flush=True)"})
    kinds = [(e.kind, e.offset.split(":")[0]) for e in after.events()]
    assert ("stdout", "stored") not in kinds and kinds[-1][0] == "end", kinds
    assert "Connection to broker lost" in worker.log() or "reconnect" in worker.log().lower()
    return (f"sentinel failover: primary :{first} SIGKILLed after {JOBS // 3} of {JOBS} jobs,"
            f" replica :{promoted} promoted in {failover_s:.1f} s; jobs {JOBS + 1}, lost 0,"
            f" results written twice 0, requeued by the reconciler"
            f" {worker.log().count('reconciler.requeue')}; the follower of a running job read"
            f" its output in order, never a byte twice, {skipped} bytes announced as skipped"
            f" (lagging) during the failover, then {live_after} live entries after it;"
            f" {time.monotonic() - t0:.0f} s")


def follower(seen: list[Event]) -> tuple[int, int]:
    """What a reader following the job got: each stdout event is the job's next bytes (no gap
    but one announced by a lagging event, never a byte twice), to its end. Returns the live
    entries after the first gap (the stream resumed) and the bytes announced as skipped."""
    expected = "".join(f"tick {i:03d}\n" for i in range(TICKS)).encode()
    pos, skipped, gaps, live_after = 0, 0, 0, 0
    for event in seen:
        cursor = Cursor.parse(event.offset)
        if event.kind == "lagging":
            gaps += 1
            skipped += cursor.stdout - pos
            pos = cursor.stdout
        elif event.kind == "stdout":
            start = cursor.stdout - len(event.data)
            assert start == pos and event.data == expected[start:cursor.stdout], (start, pos)
            pos = cursor.stdout
            live_after += gaps > 0 and cursor.entry != STORED
    assert seen[-1].kind == "end" and pos == len(expected), (pos, seen[-1])
    assert gaps >= 1, "the failover cost the live stream nothing? (no lagging event)"
    assert live_after > 0, "the live stream did not resume after the failover"
    return live_after, skipped


def finished(fleet: Fleet) -> int:
    return int(fleet.sql("SELECT count(*) FROM jobs WHERE status = 'finished'")[0][0])
