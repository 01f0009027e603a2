"""Server-Sent Events of a job's output: each event's id is its stream offset, so a reader
resumes with ``Last-Event-ID``. A reader that takes no event for ``send_timeout_s`` is dropped:
its events wait in the server's socket buffer only, never in a queue of ours, and its thread
and Redis reads end with it (bounded memory, whatever a reader does)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import anyio
import structlog
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Send

from tasks.streams import Event

log = structlog.get_logger(__name__)
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


class EventStream(StreamingResponse):
    def __init__(self, events: Iterator[str], send_timeout_s: float) -> None:
        self._events = events
        self.send_timeout_s = send_timeout_s
        super().__init__(iterate_in_threadpool(events), media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def stream_response(self, send: Send) -> None:
        try:
            with anyio.fail_after(self.send_timeout_s):
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                body = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                with anyio.fail_after(self.send_timeout_s):  # a reader that stopped reading
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:  # the connection is closed behind us, unfinished
            log.info("sse.reader_dropped", after_s=self.send_timeout_s)
        finally:
            close = getattr(self._events, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)
