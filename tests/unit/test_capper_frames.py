from __future__ import annotations

import struct

from workers.capper import OutputCapper
from workers.frames import FrameDecoder


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_capper_keeps_a_head_and_counts_the_rest() -> None:
    capper = OutputCapper(cap=10, keep=4)
    assert capper.feed("stdout", b"abcdef") == b"abcdef"
    assert capper.feed("stderr", b"123456") == b"1234"
    assert capper.exceeded and capper.dropped == 2
    out, err = capper.streams["stdout"], capper.streams["stderr"]
    assert (bytes(out.head), out.total, out.truncated) == (b"abcd", 6, True)
    assert (bytes(err.head), err.total) == (b"1234", 4)
    assert capper.feed("stdout", b"more") == b"" and capper.dropped == 6


def test_capper_memory_is_bounded_whatever_is_fed() -> None:
    capper = OutputCapper(cap=1 << 30, keep=1024)
    for _ in range(1000):
        capper.feed("stdout", b"x" * 65536)
    assert len(capper.streams["stdout"].head) == 1024 and not capper.exceeded


def test_decoder_handles_frames_split_anywhere() -> None:
    data = frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world")
    for step in (1, 3, 7, len(data)):
        decoder, got = FrameDecoder(), []
        for i in range(0, len(data), step):
            got += decoder.feed(data[i:i + step])
        joined = {"stdout": b"".join(d for s, d in got if s == "stdout"),
                  "stderr": b"".join(d for s, d in got if s == "stderr")}
        assert joined == {"stdout": b"hello world", "stderr": b"oops"}
