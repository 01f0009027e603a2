"""A streamed answer no reader can hold forever: a send that waits ``send_timeout_s`` (the
reader stopped reading) drops the connection. Its chunks wait in the socket's buffer only,
never in a queue of ours, and its iterator is closed however the answer ends (its thread, its
Redis reads or its database cursor end with it): bounded memory, whatever a reader does."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import structlog
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Send

log = structlog.get_logger(__name__)


class Paced(StreamingResponse):
    dropped = "api.reader_dropped"  # what the log says of a reader dropped

    def __init__(self, chunks: Iterator[str] | Iterator[bytes], send_timeout_s: float, *,
                 status_code: int = 200, media_type: str,
                 headers: dict[str, str] | None = None) -> None:
        self._chunks = chunks
        self.send_timeout_s = send_timeout_s
        super().__init__(iterate_in_threadpool(chunks), status_code=status_code,
                         media_type=media_type, headers=headers)

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
            log.info(self.dropped, after_s=self.send_timeout_s)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):  # also when the reader went away
                    await anyio.to_thread.run_sync(close)
