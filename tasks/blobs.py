"""Outputs kept whole in PostgreSQL (the ``job_blobs`` table): each 1 MiB of a stream as one
zstd frame, so that a reader can start anywhere without inflating what came before.

Pure parts: ``frames`` (bytes in, compressed chunks out) and ``inflate``; the store does the
SQL (``JobStore.put_blobs``, ``JobStore.blob_frames``).
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
    data: bytes


def frames(blob: str, chunks: Iterable[bytes]) -> Iterator[Frame]:
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    for seq, chunk in enumerate(chunks):
        yield Frame(blob, seq, len(chunk), compressor.compress(chunk))


def inflate(frame_data: bytes, raw_bytes: int) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame_data, max_output_size=raw_bytes)


def read_from(parts: Iterable[tuple[int, bytes]], start: int = 0) -> Iterator[bytes]:
    """The bytes from ``start`` of a blob given as (raw size, frame) in order: frames before
    the one ``start`` falls in are skipped without being inflated."""
    offset = 0
    for raw_bytes, data in parts:
        if offset + raw_bytes <= start:
            offset += raw_bytes
            continue
        chunk = inflate(data, raw_bytes)
        yield chunk[max(0, start - offset):]
        offset += raw_bytes
