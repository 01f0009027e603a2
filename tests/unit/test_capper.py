from __future__ import annotations

from workers.capper import OutputCapper


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
