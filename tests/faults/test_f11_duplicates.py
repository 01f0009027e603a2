"""F11: the same job delivered twice at once, and redelivered while it runs: never two
containers for one job. Claiming is one conditional UPDATE; a delivery that cannot claim
leaves before it makes a container. Checked in the attempts table and the engine's events.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.faults.rig import EventLog, Fleet, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f11_duplicate_deliveries_never_make_a_second_container(fleet: Fleet) -> None:
    fleet.configure(concurrency=2)
    events = EventLog(fleet.settings.fleet).start()
    try:
        w = fleet.worker()
        # Delivered twice at once: a second message for the same job, sent straight away, so
        # both pool processes race to claim it.
        twice = fleet.submit("import time; time.sleep(1); print('once')")
        fleet.client.enqueue(twice)
        record = fleet.wait(twice, 30)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "once\n", 1)
        wait_for("the second delivery", lambda: w.log().count("job.not_claimed") == 1, 10)

        # Redelivered while running: the very message, pushed back to the queue the way kombu
        # restores an unacknowledged one after its visibility timeout.
        running = fleet.submit(
            f"import time; time.sleep(max(0, {time.time() + 4} - time.time())); print('once')")
        fleet.running_container(running)
        r = fleet.client.redis
        [message] = [m for m in (json.loads(v)[0] for v in r.hvals("unacked"))
                     if running.encode() in base64.b64decode(m["body"])]
        r.lpush(fleet.settings.queue, json.dumps(message))
        wait_for("the redelivery", lambda: w.log().count("job.not_claimed") == 2, 10)
        record = fleet.wait(running, 30)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "once\n", 1)

        for job in (twice, running):
            assert len(fleet.attempts(job)) == 1
            assert len(fleet.created(job, events)) == 1
            assert fleet.end_events(job) == 1
        assert not fleet.leftovers()
    finally:
        events.close()
