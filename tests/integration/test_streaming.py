"""Live output through the real path: worker → relay thread → Redis stream → client events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from airlock.client import Airlock
from config.settings import Settings
from tasks import streams
from tasks.streams import Event
from tests.conftest import ARTIFACTS
from tests.services import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]
MiB = 1024**2


def record_figure(name: str, value: Any) -> None:
    """Keep measured figures for docs/streaming.md (artifacts/streaming-figures.json)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "streaming-figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2))


def output_of(events: list[Event], kind: str) -> bytes:
    return b"".join(e.data for e in events if e.kind == kind)


@pytest.fixture
def forget_streams(client: Airlock) -> Iterator[list[str]]:
    """Job ids whose streams to delete after the test (big streams would sit in Redis an hour)."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        client.redis.delete(streams.output_key(job_id), streams.done_key(job_id))


def test_output_arrives_while_the_job_runs(client: Airlock, worker: WorkerProcess) -> None:
    code = ("import sys, time\n"
            "for i in range(4):\n"
            "    print(f'{i} {time.time()}', flush=True)\n"
            "    print(f'e{i}', file=sys.stderr, flush=True)\n"
            "    time.sleep(1)\n")
    handle = client.submit({"code": code})
    seen: list[tuple[float, Event]] = []
    for event in handle.events():
        seen.append((time.time(), event))
    end_at = seen[-1][0]
    end = seen[-1][1]
    assert end.kind == "end" and end.summary["verdict"] == "ok"
    lines: list[tuple[float, str]] = []  # (when its last byte arrived, the line)
    pending = b""
    for t, e in seen:
        if e.kind == "stdout":
            pending += e.data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                lines.append((t, line.decode()))
    first_at, first = lines[0]
    assert first.startswith("0 ")
    # The first line is seen while the job still has 3 s to go.
    assert end_at - first_at > 2.5, [(t - first_at, e.kind) for t, e in seen]
    latencies = [t - float(line.split()[1]) for t, line in lines]
    assert max(latencies) < 1.0, latencies
    record_figure("line_latency_ms", [round(x * 1000, 1) for x in latencies])
    events = [e for _, e in seen]
    assert output_of(events, "stdout").decode().split()[::2] == ["0", "1", "2", "3"]
    assert output_of(events, "stderr") == b"e0\ne1\ne2\ne3\n"  # apart, and in order


def test_resume_from_any_offset_returns_exactly_the_missing_part(client: Airlock,
                                                                 worker: WorkerProcess) -> None:
    code = ("import sys, time\n"
            "for i in range(60):\n"
            "    print(f'out {i}', flush=True)\n"
            "    if i % 3 == 0: print(f'err {i}', file=sys.stderr, flush=True)\n"
            "    time.sleep(0.02)\n")
    handle = client.submit({"code": code})
    # A reader that loses its connection after a few events, mid-job...
    first: list[Event] = []
    for event in handle.events():
        first.append(event)
        if len(first) == 5:
            break
    # ...continues exactly where it stopped.
    rest = list(client.events(handle.id, first[-1].offset))
    assert rest[-1].kind == "end"
    joined = first + rest
    record = handle.wait(30)
    expected_out = "".join(f"out {i}\n" for i in range(60)).encode()
    expected_err = "".join(f"err {i}\n" for i in range(0, 60, 3)).encode()
    assert output_of(joined, "stdout") == expected_out == record.stdout_bytes
    assert output_of(joined, "stderr") == expected_err
    # From any offset of a complete read: exactly the bytes after it, then the end. (The job
    # has ended: its live stream is down to its end entry, PostgreSQL answers the rest.)
    for k in (0, len(joined) // 2, len(joined) - 2):
        cur = joined[k].cursor
        again = list(client.events(handle.id, joined[k].offset, follow=False))
        assert output_of(again, "stdout") == expected_out[cur.stdout:]
        assert output_of(again, "stderr") == expected_err[cur.stderr:]
        assert again[-1].kind == "end" and again[-1].summary["verdict"] == "ok"
    full = joined
    # After the stream expired, the stored result continues from the same byte positions.
    client.redis.delete(streams.output_key(handle.id))
    middle = full[len(full) // 2]
    replay = list(client.events(handle.id, middle.offset))
    assert replay[-1].kind == "end" and replay[-1].summary["verdict"] == "ok"
    cur = middle.cursor
    assert output_of(replay, "stdout") == expected_out[cur.stdout:]
    assert output_of(replay, "stderr") == expected_err[cur.stderr:]
    assert output_of(list(client.events(handle.id)), "stdout") == expected_out  # late joiner


def _worker_rss(worker: WorkerProcess) -> int:
    """The RSS of the worker's processes together (any one of them growing shows)."""
    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker, self.peak, self.done = worker, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, _worker_rss(self.worker))


BIG = "import sys\nb = b'x' * 2**20\nfor _ in range(64): sys.stdout.buffer.write(b)\n"


def test_64_mib_stream_with_worker_memory_bounded_and_a_stalled_reader_harmless(
        client: Airlock, worker: WorkerProcess, settings: Settings,
        forget_streams: list[str]) -> None:
    client.submit({"code": "print(1)"}).wait(60)  # every worker process has run a job
    before = _worker_rss(worker)
    sampler = RssSampler(worker)
    sampler.start()
    t0 = time.monotonic()
    handle = client.submit({"code": BIG, "limits": {"output_bytes": 64 * MiB}})
    forget_streams.append(handle.id)
    got = skipped = events = 0
    end: Event | None = None
    for event in handle.events():  # a reader keeping up
        events += 1
        if event.kind == "stdout":
            got += len(event.data)
        elif event.kind == "lagging":
            skipped += sum(event.summary.values())
        elif event.kind == "end":
            end = event
    read_s = time.monotonic() - t0
    sampler.done.set()
    sampler.join()
    record = handle.wait(30)
    assert record.verdict == "ok", record.summary()
    assert end is not None and end.summary["stdout_bytes"] == 64 * MiB
    # Every byte is either streamed or accounted for in a "lagging" event: the relay's own
    # (it fell behind) and the window's (it moved past this reader; tasks/relay.py).
    assert got + skipped == 64 * MiB and skipped >= end.summary["live_skipped_bytes"]
    assert len(record.stdout_bytes) == settings.caps.keep_output_bytes  # the stored head
    growth = sampler.peak - before
    assert growth < 40 * MiB, (before, sampler.peak)

    # A reader that stops after its first event does not slow the job.
    stalled = client.submit({"code": BIG, "limits": {"output_bytes": 64 * MiB},
                             "label": "stalled reader"})
    forget_streams.append(stalled.id)
    reader = stalled.events()
    next(reader)  # ...and then never reads again, holding its connection
    slow = stalled.wait(60)
    reader.close()
    assert slow.verdict == "ok", slow.summary()
    assert record.wall_ms is not None and slow.wall_ms is not None
    assert slow.wall_ms < record.wall_ms * 2 + 1000, (record.wall_ms, slow.wall_ms)
    # Redis keeps the ended stream's end entry only; PostgreSQL has it whole for whoever
    # reads it later.
    assert client.redis.xlen(streams.output_key(stalled.id)) == 1
    later = list(client.events(stalled.id))
    assert output_of(later, "stdout") == b"x" * (64 * MiB) and later[-1].kind == "end"
    record_figure("stream_64mib", {
        "job_wall_ms_reader": record.wall_ms, "job_wall_ms_stalled_reader": slow.wall_ms,
        "client_read_s": round(read_s, 2), "client_MiB_s": round(64 / read_s, 1),
        "skipped_bytes": skipped, "events": events,
        "worker_rss_before_MiB": round(before / MiB, 1),
        "worker_rss_peak_MiB": round(sampler.peak / MiB, 1)})


def test_cli_logs_prints_and_resumes_from_an_offset(client: Airlock, settings: Settings,
                                                    worker: WorkerProcess) -> None:
    import subprocess
    import sys

    from tests.services import ROOT, worker_env

    handle = client.submit({"code": "import sys\nfor i in range(3):\n    print(i, flush=True)\n"
                                    "print('bad', file=sys.stderr)\n"})
    events = list(handle.events())
    cut = next(e for e in events if e.kind == "stdout")

    def logs(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "airlock.cli", "logs", handle.id, *args],
                              cwd=ROOT, env=worker_env(settings), capture_output=True, timeout=60)

    whole = logs("--follow")
    assert (whole.returncode, whole.stdout, whole.stderr) == (0, b"0\n1\n2\n", b"bad\n")
    rest = logs("--offset", cut.offset)
    assert rest.stdout == output_of(events, "stdout")[cut.cursor.stdout:]
    assert logs("--offset", "nonsense").returncode != 0
