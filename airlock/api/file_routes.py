"""The files a job collected, over HTTP: their manifest, and each file's bytes streamed from
its zstd frames (a frame inflated at a time: a file is never whole in memory), with its
length, checksum and byte ranges (airlock/api/delivery.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from airlock.api import delivery
from airlock.api.models import FilesOut
from airlock.api.paced import Paced
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


@router.get("/jobs/{job_id}/files", response_model=FilesOut, responses=ERRORS)
async def job_files(request: Request, job_id: JobIdPath) -> dict[str, Any]:
    """The files the job collected (each with its size and sha256) and those it refused (each
    with its reason); empty until the job has ended."""
    who = await caller(request, Scope.READ)
    return await run_in_threadpool(service(request).manifest, who, job_id)


@router.api_route("/jobs/{job_id}/files/{name:path}", methods=["GET", "HEAD"],
                  responses=FILE_ANSWERS, response_class=Response)
async def job_file(request: Request, job_id: JobIdPath,
                   name: Annotated[str, Path(description="A manifest entry's path.")],
                   range_: Annotated[str | None, Header(alias="range")] = None,
                   if_none_match: Annotated[str | None, Header()] = None,
                   if_range: Annotated[str | None, Header()] = None) -> Response:
    """A collected file's bytes, with ``Content-Length``, ``ETag: "<sha256>"`` and
    ``Repr-Digest`` (of the whole file). One range (``bytes=a-b``, ``a-``, ``-n``) is 206;
    one past the end 416; several ranges are ignored (200, the whole file). ``If-None-Match``
    with its ETag: 304. ``HEAD``: the same headers, no body, nothing read."""
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
    if request.method == "HEAD":  # the headers name the length: Response keeps it
        return Response(status_code=chosen.status, headers=headers, media_type=BYTES)
    chunks = svc.read_file(job_id, row, chosen.start, chosen.end)
    return Paced(chunks, request.app.state.send_timeout_s, status_code=chosen.status,
                 media_type=BYTES, headers=headers)
