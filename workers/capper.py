"""Output collection with bounded memory: a kept head per stream, a running total, a cap."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StreamBuffer:
    keep: int
    head: bytearray = field(default_factory=bytearray)
    total: int = 0
    dropped: int = 0  # past the cap: never stored anywhere

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head)


class OutputCapper:
    """Counts both streams against one cap and keeps at most ``keep`` bytes of each.

    ``feed`` returns the part of a chunk that is still within the cap (to relay live); the
    rest is counted in ``dropped``. Memory stays bounded by ``2 * keep`` whatever the job prints.
    """

    def __init__(self, cap: int, keep: int) -> None:
        self.cap = cap
        self.streams = {"stdout": StreamBuffer(keep), "stderr": StreamBuffer(keep)}
        self.accepted = 0
        self.dropped = 0

    @property
    def exceeded(self) -> bool:
        return self.dropped > 0

    def feed(self, stream: str, data: bytes | memoryview) -> bytes | memoryview:
        room = max(0, self.cap - self.accepted)
        taken, over = data[:room], len(data) - min(room, len(data))
        self.accepted += len(taken)
        self.dropped += over
        buf = self.streams[stream]
        buf.total += len(taken)
        buf.dropped += over
        space = buf.keep - len(buf.head)
        if space > 0:
            buf.head += taken[:space]
        return taken
