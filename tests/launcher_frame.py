"""A reader of the launcher's frame (workers/launcher.py documents it), for the tests only: the
one real reader is the launcher itself (workers/launcher.c)."""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    deadline_ms: int
    cwd: str
    argv: list[str]
    env: dict[str, str]
    files: dict[str, bytes]
    rest: bytes
    modes: dict[str, int]  # what follows the frame: the job's stdin

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000


def decode(payload: bytes) -> Frame:
    header, _, after = payload.partition(b"\n")
    assert header.startswith(b"AIRLOCK1 "), header
    size = int(header[len(b"AIRLOCK1 "):])
    body, rest = after[:size], after[size:]
    assert len(body) == size
    at = 0

    def u32() -> int:
        nonlocal at
        (value,) = struct.unpack_from(">I", body, at)
        at += 4
        return int(value)

    def raw(n: int) -> bytes:
        nonlocal at
        assert at + n <= len(body)
        at += n
        return body[at - n:at]

    def text() -> str:
        data = raw(u32())
        assert raw(1) == b"\0" and b"\0" not in data
        return data.decode()

    deadline_ms, cwd = u32(), text()
    argv = [text() for _ in range(u32())]
    env = dict(text().split("=", 1) for _ in range(u32()))
    files, modes = {}, {}
    for _ in range(u32()):
        name = text()
        modes[name] = u32()
        files[name] = raw(u32())
    assert at == len(body), "bytes after the last file"
    return Frame(deadline_ms, cwd, argv, env, files, rest, modes)
