"""The files a job collected, over HTTP: their manifest, and each file's bytes streamed from
its zstd frames (a frame inflated at a time: a file is never whole in memory), with its
length, checksum and byte ranges (airlock/api/delivery.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import Send

from airlock.api import delivery
from airlock.api.models import FilesOut
from airlock.api.problems import Problem
from airlock.api.routes import ERRORS, JobIdPath, caller, service
from tasks.keys import Scope

router = APIRouter(prefix="/v1")
BYTES = "application/octet-stream"
FILE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"content": {BYTES: {}}, "description": "The file, whole"},
    206: {"content": {BYTES: {}}, "description": "The range asked (Content-Range says which)"},
    304: {"description": "If-None-Match named this file's ETag: the caller has it"},
    **ERRORS}


class Download(StreamingResponse):
    """A file's chunks, its iterator closed however the answer ends (its frames are read
    through a server-side cursor: the connection goes back to the pool at once)."""

    def __init__(self, chunks: Iterator[bytes], status: int, headers: dict[str, str]) -> None:
        self._chunks = chunks
        super().__init__(iterate_in_threadpool(chunks), status_code=status, headers=headers,
                         media_type=BYTES)

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):  # also when the reader went away
                    await anyio.to_thread.run_sync(close)


@router.get("/jobs/{job_id}/files", response_model=FilesOut, responses=ERRORS)
async def job_files(request: Request, job_id: JobIdPath) -> dict[str, Any]:
    """The files the job collected (each with its size and sha256) and those it refused (each
    with its reason); empty until the job has ended."""
    who = await caller(request, Scope.READ)
    return await run_in_threadpool(service(request).manifest, who, job_id)


@router.get("/jobs/{job_id}/files/{name:path}", responses=FILE_ANSWERS,
            response_class=Response)
async def job_file(request: Request, job_id: JobIdPath,
                   name: Annotated[str, Path(description="A manifest entry's path.")],
                   range_: Annotated[str | None, Header(alias="range")] = None,
                   if_none_match: Annotated[str | None, Header()] = None,
                   if_range: Annotated[str | None, Header()] = None) -> Response:
    """A collected file's bytes, with ``Content-Length``, ``ETag: "<sha256>"`` and
    ``Repr-Digest`` (of the whole file). One range (``bytes=a-b``, ``a-``, ``-n``) is 206;
    one past the end 416; several ranges are ignored (200, the whole file). ``If-None-Match``
    with its ETag: 304."""
    who = await caller(request, Scope.READ)
    svc = service(request)
    row = await run_in_threadpool(svc.file, who, job_id, name)
    size = row.size or 0
    chosen = delivery.answer(size, row.sha256, range_, if_none_match, if_range)
    headers = delivery.headers(row.path, size, row.sha256, chosen)
    if chosen.status == 304:
        return Response(status_code=304, headers=headers)
    if chosen.status == 416:
        raise Problem(416, "range", "Range not satisfiable",
                      f"the file is {size} bytes: no byte of that range is in it",
                      headers=headers)
    chunks = svc.read_file(job_id, row, chosen.start, chosen.end)
    return Download(chunks, chosen.status, headers)
