"""Outputs are never silently lost, and Redis stays bounded (ATTACKS.md F20): a job's live
stream is a window of its newest output, trimmed to its end entry once the job has ended;
PostgreSQL keeps the output whole, compressed, up to the job's output cap."""

from __future__ import annotations

import threading
import time

import pytest

from airlock.client import Airlock
from config.settings import Settings
from tasks import streams
from tests.services import WorkerProcess

pytestmark = pytest.mark.integration
MiB = 1024**2
FORTY = ("import sys\nfor i in range(40):\n    sys.stdout.buffer.write(bytes([65 + i % 26]) * 2**20)\n"
         "    sys.stdout.flush()\n")
# The same, paced (20 ms a MiB): the stream is watched for about a second while it grows.
PACED_FORTY = FORTY.replace("import sys\n", "import sys, time\n") + "    time.sleep(0.02)\n"


class MemoryPeak(threading.Thread):
    """Samples Redis's own count of the stream key's bytes (MEMORY USAGE) while it exists."""

    def __init__(self, client: Airlock, key: str) -> None:
        super().__init__(daemon=True)
        self.client, self.key, self.peak, self.samples = client, key, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            used = self.client.redis.memory_usage(self.key, samples=0)
            if used:
                self.peak, self.samples = max(self.peak, int(used)), self.samples + 1


def test_a_stream_past_its_cap_stays_bounded_in_redis_and_the_record_keeps_it_whole(
        client: Airlock, settings: Settings, worker: WorkerProcess) -> None:
    handle = client.submit(code=PACED_FORTY, limits={"output_bytes": 64 * MiB})
    sampler = MemoryPeak(client, streams.output_key(handle.id))
    sampler.start()
    record = handle.wait(120)
    sampler.done.set()
    sampler.join()

    assert record.verdict == "ok", record.summary()
    assert record.stdout_total == 40 * MiB and not record.stdout_truncated
    assert sampler.samples > 10  # it was watched while the job ran
    # Redis held a window of the stream, never the 40 MiB: its cap and an entry's worth.
    window = settings.streams.max_bytes + settings.streams.relay_entry_bytes
    assert sampler.peak <= window * 1.1, (sampler.peak, window)
    # Ended: the stream is its end entry alone (PostgreSQL has the output).
    assert client.redis.xlen(streams.output_key(handle.id)) == 1
    # A day later (the stream expired by hand): the whole 40 MiB, byte for byte.
    client.redis.delete(streams.output_key(handle.id), streams.done_key(handle.id))
    whole = b"".join(client.output(handle.id, "stdout"))
    assert whole == b"".join(bytes([65 + i % 26]) * MiB for i in range(40))
    assert len(record.stdout_bytes) == settings.caps.keep_output_bytes  # the row's head
    # and from any byte on, as a resuming reader gets it
    tail = b"".join(client.output(handle.id, "stdout", 39 * MiB + 5))
    assert tail == whole[39 * MiB + 5:]


def test_a_reader_left_behind_by_the_window_is_told_and_then_gets_the_rest(
        client: Airlock, worker: WorkerProcess) -> None:
    handle = client.submit(code=FORTY, limits={"output_bytes": 64 * MiB})
    reader = handle.events()
    first = next(reader)  # then it reads nothing while the job prints 40 MiB
    deadline = time.monotonic() + 120
    while not client.result(handle.id).done and time.monotonic() < deadline:
        time.sleep(0.2)
    rest = list(reader)
    got = first.data + b"".join(e.data for e in rest if e.kind == "stdout")
    assert rest[-1].kind == "end" and rest[-1].summary["verdict"] == "ok"
    assert got == b"".join(bytes([65 + i % 26]) * MiB for i in range(40))
