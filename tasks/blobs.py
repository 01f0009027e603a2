"""Outputs kept whole in PostgreSQL (the ``job_blobs`` table): each 1 MiB of a stream as one
zstd frame, so that a reader can start anywhere without inflating what came before.

Pure parts: ``frames`` (bytes in, compressed chunks out), ``inflate``, and the arithmetic
of a byte range (``window``, ``cut``); tasks/outputs.py writes and reads them (through the
store's SQL, and the object store where there is one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zstandard

LEVEL = 3  # zstd's default: about 300 MB/s on one core here, and most of the ratio


@dataclass(frozen=True, slots=True)
class Frame:
    blob: str
    seq: int
    raw_bytes: int
    data: bytes | None  # None once placed in the object store (tasks/outputs.py)


def frames(blob: str, chunks: Iterable[bytes]) -> Iterator[Frame]:
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    for seq, chunk in enumerate(chunks):
        yield Frame(blob, seq, len(chunk), compressor.compress(chunk))


def inflate(frame_data: bytes, raw_bytes: int) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame_data, max_output_size=raw_bytes)


def window(sizes: Iterable[tuple[int, int]], start: int,
           end: int | None) -> tuple[int, int, int] | None:
    """(first seq, last seq, offset of the first) of the frames that hold bytes
    [start, end) of a blob whose frames have these (seq, raw size); None if none do."""
    first = last = None
    offset = first_offset = 0
    for seq, raw_bytes in sizes:
        if offset + raw_bytes > start and (end is None or offset < end):
            if first is None:
                first, first_offset = seq, offset
            last = seq
        offset += raw_bytes
    if first is None or last is None:
        return None
    return first, last, first_offset


def cut(chunks: Iterable[bytes], offset: int, start: int, end: int | None) -> Iterator[bytes]:
    """Bytes [start, end) of chunks that begin at ``offset`` of the blob."""
    for chunk in chunks:
        lo = max(0, start - offset)
        hi = len(chunk) if end is None else min(len(chunk), end - offset)
        if lo < hi:
            yield chunk[lo:hi]
        offset += len(chunk)
