"""The live-output relay's bounded buffer, publisher accounting and cursors (no Redis)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from base.errors import AirlockError
from tasks import relay as relay_module
from tasks.relay import Entry, Publisher, Relay
from tasks.streams import START, Cursor


def relay(buffer_bytes: int = 1000, entry_bytes: int = 100, max_entries: int = 1000,
          budget: int = 10_000) -> Relay:
    # Never started: these tests look at what would be written, not at Redis.
    return Relay(None, buffer_bytes=buffer_bytes, entry_bytes=entry_bytes,  # type: ignore[arg-type]
                 max_entries=max_entries, budget_bytes=budget, ttl_s=60)


def publisher(r: Relay, job: str = "j") -> Publisher:
    return Publisher(r, job, r.budget_bytes, r.max_entries)


def drain(r: Relay) -> list[tuple[str, bytes, int, int]]:
    out = []
    while entries := r.buffer.take(1 << 30, timeout=0):
        out += [(e.kind, bytes(e.data), e.stdout, e.stderr) for e in entries]
    return out


def test_chunks_of_one_stream_coalesce_up_to_the_entry_size_in_order() -> None:
    r = relay(entry_bytes=10)
    p = publisher(r)
    for piece in (b"abc", b"def", b"ghij", b"k"):
        p.chunk("stdout", piece)
    p.chunk("stderr", b"E")
    p.chunk("stdout", b"l")
    assert drain(r) == [("stdout", b"abcdefghij", 10, 0), ("stdout", b"k", 11, 0),
                        ("stderr", b"E", 11, 1), ("stdout", b"l", 12, 1)]
    assert p.entries == 4


def test_a_lingering_take_lets_a_stream_fill_its_entry_and_no_more() -> None:
    r = relay(entry_bytes=10)
    p = publisher(r)
    p.chunk("stdout", b"abc")
    feeder = threading.Timer(0.05, lambda: [p.chunk("stdout", b"def"), p.chunk("stdout", b"ghij")])
    feeder.start()
    # Less than an entry's worth waits (up to the linger) and merges what comes meanwhile...
    taken = r.buffer.take(1 << 30, timeout=0, linger_s=5.0)
    feeder.join()
    assert [bytes(e.data) for e in taken] == [b"abcdefghij"]
    # ...a full entry goes at once, and without a linger a lone chunk does too.
    p.chunk("stdout", b"0123456789")
    t = time.monotonic()
    assert [bytes(e.data) for e in r.buffer.take(1 << 30, timeout=0, linger_s=5.0)] == [
        b"0123456789"]
    p.chunk("stdout", b"x")
    assert [bytes(e.data) for e in r.buffer.take(1 << 30, timeout=0)] == [b"x"]
    # Nor does a lone chunk that is not part of a stream (judged once it is there).
    p.chunk("stdout", b"y")
    assert [bytes(e.data) for e in r.buffer.take(1 << 30, timeout=0, linger_s=5.0,
                                                 streaming=lambda: False)] == [b"y"]
    assert time.monotonic() - t < 2.5  # none of these waited out the 5 s linger


def test_a_full_buffer_drops_and_then_says_how_much_was_skipped() -> None:
    r = relay(buffer_bytes=10, entry_bytes=10)
    p = publisher(r)
    p.chunk("stdout", b"0123456789")  # fills the buffer
    p.chunk("stdout", b"lost1")  # dropped: the job does not wait
    p.chunk("stderr", b"lost22")
    assert r.buffer.buffered == 10 and p.skipped_total == 11
    assert drain(r) == [("stdout", b"0123456789", 10, 0)]
    p.chunk("stdout", b"back")
    kinds = drain(r)
    assert kinds[0][0] == "lagging"
    assert json.loads(kinds[0][1]) == {"skipped_stdout": 5, "skipped_stderr": 6}
    assert kinds[0][2:] == (15, 6)  # positions after the skipped bytes, before "back"
    assert kinds[1] == ("stdout", b"back", 19, 6)


def test_memory_stays_bounded_whatever_is_fed() -> None:
    r = relay(buffer_bytes=4096, entry_bytes=1024)
    p = publisher(r)
    for _ in range(10_000):
        p.chunk("stdout", b"x" * 700)
    assert r.buffer.high_water <= 4096
    assert p.positions["stdout"] == 7_000_000
    assert p.relayed + p.skipped_total == 7_000_000


def test_the_live_stream_is_a_window_room_is_made_before_entries_go_in() -> None:
    p = publisher(relay(budget=10))
    assert p.make_room([4]) is None
    for n in range(2):
        p.written(f"1-{n}", 4)
    assert p.make_room([4]) == "1-1"  # 8 + 4 > 10: the oldest goes first
    p.written("1-2", 4)
    assert [i for i, _ in p.window] == ["1-1", "1-2"] and p.window_bytes == 8
    assert p.make_room([50]) == "1-3"  # bigger than the window: all the old ones go
    assert not p.window and p.window_bytes == 0
    p = publisher(relay(max_entries=3))
    for n in range(3):
        p.written(f"2-{n}", 1)
    assert p.make_room([1, 1]) == "2-2" and len(p.window) == 1


def test_output_goes_in_with_its_trim_and_an_end_leaves_the_end_entry_alone() -> None:
    pipe = FakePipe()
    r = relay(budget=5)
    r.r = type("R", (), {"pipeline": lambda self, transaction: pipe})()  # type: ignore[assignment]
    p = publisher(r, "abc")
    for piece in (b"1234", b"5678"):
        p.chunk("stdout", piece)
        r._write(r.buffer.take(1 << 20, timeout=0))
    xadds = [c for c in pipe.calls if c[0] == "xadd"]
    assert [c[2]["minid"] for c in xadds] == [None, "id-2"]  # the first made room for the second
    p.relay.buffer.put(p._entry("end", b"{}"), force=True)
    r._write(r.buffer.take(1 << 20, timeout=0))
    assert pipe.calls[-2] == ("xtrim", ("airlock:out:abc",), {"minid": "id-3",
                                                              "approximate": False})
    assert not p.window  # PostgreSQL has it whole: only the end entry stays


def test_end_comes_after_pending_output_with_totals_and_waits_for_the_writer() -> None:
    r = relay(buffer_bytes=5, entry_bytes=5)
    p = publisher(r)
    p.chunk("stdout", b"12345")
    p.chunk("stdout", b"678")  # dropped
    written: list[Entry] = []

    def writer() -> None:
        while True:
            entries = r.buffer.take(1 << 20, timeout=2)
            written.extend(entries)
            for e in entries:
                if e.written is not None:
                    e.written.set()
                    return

    t = threading.Thread(target=writer)
    t.start()
    r.ensure_started = lambda: None  # type: ignore[method-assign]
    assert p.end({"verdict": "ok"}, timeout=5)
    t.join()
    assert [e.kind for e in written] == ["stdout", "lagging", "end"]
    summary = json.loads(bytes(written[-1].data))
    assert summary == {"verdict": "ok", "stdout_bytes": 8, "stderr_bytes": 0,
                       "live_skipped_bytes": 3}


class FakePipe:
    """Records calls; replies as Redis would (an XADD's reply is the new entry's id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.command_stack: list[str] = []
        self.ids = 0

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> None:
            self.calls.append((name, a, k))
            self.command_stack.append(name)
        return call

    def execute(self) -> list[Any]:
        self.calls.append(("execute", (), {}))
        replies: list[Any] = []
        for name in self.command_stack:
            self.ids += name == "xadd"
            replies.append(f"id-{self.ids}".encode() if name == "xadd" else True)
        self.command_stack = []
        return replies


def test_one_pipeline_per_batch_with_positions_and_expiry_once() -> None:
    pipe = FakePipe()
    r = relay()
    r.r = type("R", (), {"pipeline": lambda self, transaction: pipe})()  # type: ignore[assignment]
    p = publisher(r, "abc")
    p.chunk("stdout", b"hi")
    p.chunk("stderr", b"oops")
    r._write(r.buffer.take(1 << 20, timeout=0))
    names = [c[0] for c in pipe.calls]
    assert names == ["xadd", "expire", "xadd", "execute"]
    key, fields = pipe.calls[0][1]
    assert key == "airlock:out:abc" and fields == {"t": "stdout", "d": b"hi", "p": "2,0"}
    assert pipe.calls[2][1][1]["p"] == "2,4"


def test_cursor_round_trips_and_refuses_garbage() -> None:
    assert Cursor.parse(START) == Cursor("0-0", 0, 0)
    c = Cursor("1712345678901-3", 65536, 12)
    assert Cursor.parse(str(c)) == c
    assert Cursor.parse("stored:5:0") == Cursor("stored", 5, 0)
    for bad in ("", "abc", "1-2:3", "1-2:x:0", "1-2:-1:0", "$", "1-2:3:4:5"):
        with pytest.raises(AirlockError):
            Cursor.parse(bad)


class _StuckRedis:
    """A Redis whose pipelined writes wait until ``gate`` is set (a hung server)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.command_stack: list[str] = []

    def pipeline(self, transaction: bool = False) -> _StuckRedis:
        return self

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        self.command_stack.append("xadd")

    def expire(self, *args: Any, **kwargs: Any) -> None:
        self.command_stack.append("expire")

    def execute(self) -> list[Any]:
        self.gate.wait(10)
        replies, self.command_stack = [b"1-1"] * len(self.command_stack), []
        return replies


def test_a_full_buffer_holds_the_reader_while_the_relay_drains_and_not_once_it_stalls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "STALL_S", 0.3)
    r = relay(buffer_bytes=10, entry_bytes=10)
    p = publisher(r)
    p.chunk("stdout", b"x" * 10)
    assert r.buffer.full(1)
    assert not p.hold(1)  # no relay thread to drain it: holding would stall the job for nothing
    stuck = _StuckRedis()
    r.r = stuck  # type: ignore[assignment]
    r.ensure_started()
    try:
        deadline = time.monotonic() + 5
        while r.writing_since is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the thread took the entry and is writing it
        p.chunk("stdout", b"y" * 10)  # full again while the write is under way
        assert p.hold(1)  # full, and the relay is draining it: hold
        time.sleep(0.4)
        assert not p.hold(1)  # the write has been under way past STALL_S: read on, skip
        p.chunk("stdout", b"z")
        assert p.skipped_total == 1  # dropped, to be announced by a lagging entry
    finally:
        stuck.gate.set()
        r.close()


class DownPipe(FakePipe):
    """Redis away: every pipeline fails."""

    def execute(self) -> list[Any]:
        import redis

        raise redis.exceptions.ConnectionError("Connection refused")


def test_redis_away_skips_live_output_then_it_resumes_after_a_lagging_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = relay()
    pipes: list[FakePipe] = [DownPipe()]
    r.r = type("R", (), {"pipeline": lambda self, transaction: pipes[-1]})()  # type: ignore[assignment]
    p = publisher(r, "abc")
    p.chunk("stdout", b"lost")  # its write fails: Redis is away (a failover)
    r._write(r.buffer.take(1 << 20, timeout=0))
    assert p.failed
    p.chunk("stdout", b"while-away")  # skipped until the retry time
    assert drain(r) == [] and p.skipped == {"stdout": 10, "stderr": 0}
    monkeypatch.setattr(relay_module.time, "monotonic", lambda: p.retry_at + 0.1)
    pipes.append(FakePipe())  # the new primary answers
    p.chunk("stdout", b"back")
    r._write(r.buffer.take(1 << 20, timeout=0))
    xadds = [c[1][1] for c in pipes[-1].calls if c[0] == "xadd"]
    assert [(f["t"], bytes(f["d"]), f["p"]) for f in xadds] == [
        ("lagging", b'{"skipped_stdout": 10, "skipped_stderr": 0}', "14,0"),
        ("stdout", b"back", "18,0")]
    assert not p.failed
