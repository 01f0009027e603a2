"""Docker's multiplexed attach stream: 8-byte headers (stream, 0, 0, 0, size) then payload."""

from __future__ import annotations

import struct

STREAMS = {1: "stdout", 2: "stderr"}
_HEADER = struct.Struct(">BxxxL")


class FrameDecoder:
    """Incremental decoder; holds at most one partial frame header and no payload copies."""

    def __init__(self) -> None:
        self._pending = b""
        self._stream = "stdout"
        self._left = 0

    def feed(self, data: bytes) -> list[tuple[str, memoryview]]:
        """The payload pieces in ``data``, as views of it (no copies)."""
        out: list[tuple[str, memoryview]] = []
        view = memoryview(data)
        while view:
            if self._left:
                piece = view[: self._left]
                self._left -= len(piece)
                view = view[len(piece):]
                out.append((self._stream, piece))
                continue
            need = _HEADER.size - len(self._pending)
            self._pending += bytes(view[:need])
            view = view[need:]
            if len(self._pending) == _HEADER.size:
                kind, self._left = _HEADER.unpack(self._pending)
                self._stream = STREAMS.get(kind, "stderr")
                self._pending = b""
        return out
