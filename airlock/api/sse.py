"""Server-Sent Events of a job's output: each event's id is its stream offset, so a reader
resumes with ``Last-Event-ID``. A reader that takes no event for ``send_timeout_s`` is dropped
(airlock/api/paced.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from airlock.api.paced import Paced
from tasks.streams import Event

KEEPALIVE = ": keepalive\n\n"


def frame(event: Event) -> str:
    """One event as SSE: output as text when it is UTF-8 (else base64), the rest its JSON."""
    if event.kind in ("stdout", "stderr"):
        try:
            body = {"text": event.data.decode("utf-8")}
        except UnicodeDecodeError:
            body = {"b64": base64.b64encode(event.data).decode()}
        data = json.dumps(body)
    else:
        data = json.dumps(event.summary) if event.data else "{}"
    return f"id: {event.offset}\nevent: {event.kind}\ndata: {data}\n\n"


class EventStream(Paced):
    dropped = "sse.reader_dropped"

    def __init__(self, events: Iterator[str], send_timeout_s: float) -> None:
        super().__init__(events, send_timeout_s, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
