"""The API's routes, versioned under /v1: each reads its request, proves the key, and hands a
thread the service's work (airlock/api/service.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from airlock.api import bodies, multipart
from airlock.api.auth import Principal, authenticate, bearer
from airlock.api.models import (
    BatchOut,
    BatchProgressOut,
    CancelOut,
    JobOut,
    JobPageOut,
    SubmittedOut,
    UsageOut,
)
from airlock.api.problems import Problem, ProblemOut
from airlock.api.service import Service
from airlock.api.sse import EventStream
from config.sections import Caps
from tasks.contract import NO_NUL
from tasks.keys import Scope, key_id_of
from tasks.lookup import Filters

router = APIRouter(prefix="/v1")
JOB_SPEC = {"$ref": "#/components/schemas/JobSpec"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemOut, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 409, 413, 415, 416, 422, 429, 503)}
JobIdPath = Annotated[str, Path(max_length=64, description="The job's id (a UUID).")]
RANGE = re.compile(r"^bytes=(\d{1,19})-$")
MULTIPART_JOB = {"schema": {
    "type": "object", "required": [multipart.SPEC],
    "properties": {multipart.SPEC: JOB_SPEC,
                   multipart.ARCHIVE: {"type": "string", "format": "binary",
                                       "description": "A tar archive (plain or gzip)."}},
    "additionalProperties": {"type": "string", "format": "binary",
                             "description": "A file in /workspace at the part's name."}},
    "encoding": {multipart.SPEC: {"contentType": "application/json"}}}


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def caller(request: Request, needed: Scope) -> Principal:
    """The key's tenant and scope: proved here when its row is at hand, else in a thread
    (PostgreSQL is asked)."""
    keys, secret = service(request).keys, request.app.state.key_secret
    token = bearer(request)
    if token is not None and keys.cached(key_id_of(token)) is not None:
        return authenticate(request, keys, secret, needed)
    return await run_in_threadpool(authenticate, request, keys, secret, needed)


@router.post("/jobs", status_code=201, response_model=SubmittedOut, responses={
    200: {"model": SubmittedOut, "description": "The job its Idempotency-Key named before"},
    **ERRORS}, openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": JOB_SPEC}, multipart.MEDIA: MULTIPART_JOB}}})
async def submit_job(request: Request, response: Response,
                     wait: Annotated[float | None, Query(ge=0, le=600, allow_inf_nan=False)] = None,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                     ) -> dict[str, Any]:
    """Submit a job; with ``?wait=SECONDS``, answer with it once it has ended (or as it stands
    then). The same Idempotency-Key again answers 200 with the same job. As
    ``multipart/form-data``: a ``spec`` part (the job's JSON), and file parts, each a file in
    /workspace at its part's name; a part named ``archive`` (or of a tar type) is its tar."""
    who = await caller(request, Scope.SUBMIT)
    kind = bodies.require_type(request, (*bodies.JSON_TYPES, multipart.MEDIA))
    svc = service(request)
    job = await _job_body(request, kind, svc.settings.caps)
    done = await run_in_threadpool(lambda: svc.submit(who, job(), idempotency_key, wait))
    response.status_code = 201 if done["created"] else 200
    response.headers["Location"] = f"/v1/jobs/{done['id']}"
    return done


async def _job_body(request: Request, kind: str, caps: Caps) -> Callable[[], Any]:
    """The body read, and what makes the job of it in a thread (parsing 32 MiB of JSON, or
    base64-encoding a multipart body's files, never stalls the loop)."""
    if kind == multipart.MEDIA:
        parts = await multipart.read(request, request.app.state.max_body, caps)
        return partial(multipart.job_of, parts)
    body = await bodies.read(request, request.app.state.max_body)
    return partial(bodies.parse_json, body)


@router.get("/jobs", response_model=JobPageOut, responses=ERRORS)
async def list_jobs(request: Request,
                    status: Literal["queued", "running", "finished"] | None = None,
                    label: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
                    since: datetime | None = None, until: datetime | None = None,
                    cursor: Annotated[str | None, Query(max_length=300, pattern=NO_NUL)] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The caller's jobs, newest first; ``next_cursor`` gives the next page."""
    who = await caller(request, Scope.READ)
    return await run_in_threadpool(service(request).page, who,
                                   Filters(status, label, since, until), cursor, limit)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(request: Request, job_id: JobIdPath,
                  wait: Annotated[float | None, Query(ge=0, le=600, allow_inf_nan=False)] = None,
                  ) -> dict[str, Any]:
    """The job's record; with ``?wait=SECONDS``, once it has ended (or as it stands then)."""
    who = await caller(request, Scope.READ)
    record = await run_in_threadpool(service(request).record, who, job_id, wait)
    return record.to_json()


@router.post("/jobs/{job_id}/cancel", response_model=CancelOut, responses=ERRORS)
async def cancel_job(request: Request, job_id: JobIdPath) -> dict[str, Any]:
    """A queued job never starts; a running one is killed within a second."""
    who = await caller(request, Scope.SUBMIT)
    state = await run_in_threadpool(service(request).cancel, who, job_id)
    return {"id": job_id, "state": state}


@router.get("/jobs/{job_id}/events", responses={200: {"content": {"text/event-stream": {}},
                                                      "description": "stdout, stderr, lagging,"
                                                      " then end"}, **ERRORS})
async def job_events(request: Request, job_id: JobIdPath,
                     last_event_id: Annotated[str | None, Header(max_length=200)] = None,
                     ) -> StreamingResponse:
    """Server-Sent Events: output chunks as they come (``{"text"}`` or ``{"b64"}``), then
    ``end`` with the verdict. Resume with ``Last-Event-ID``; once the live stream has gone,
    the stored result answers from the same offsets."""
    who = await caller(request, Scope.READ)
    frames = await run_in_threadpool(service(request).events, who, job_id, last_event_id)
    return EventStream(frames, request.app.state.send_timeout_s)


@router.get("/jobs/{job_id}/{stream}", responses={200: {"content": {
    "application/octet-stream": {}}, "description": "The output, whole"}, **ERRORS})
async def job_output(request: Request, job_id: JobIdPath, stream: Literal["stdout", "stderr"],
                     range_: Annotated[str | None, Header(alias="range", max_length=40)] = None,
                     ) -> StreamingResponse:
    """A finished job's stdout or stderr, whole (up to its output cap); ``Range: bytes=N-``
    resumes from byte N."""
    who = await caller(request, Scope.READ)
    start = 0
    if range_ is not None:
        found = RANGE.match(range_)
        if found is None:
            raise Problem(416, "range", "Range not satisfiable", "only bytes=N- is served")
        start = int(found.group(1))
    chunks = await run_in_threadpool(service(request).output, who, job_id, stream, start)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type="application/octet-stream",
                             status_code=206 if range_ else 200)


@router.post("/batches", status_code=201, response_model=BatchOut, responses=ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "array", "items": JOB_SPEC}},
                 "application/x-ndjson": {"schema": {"type": "string"}}}}})
async def submit_batch(request: Request,
                       idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                       ) -> dict[str, Any]:
    """Many jobs: a JSON array, or JSON Lines (one job a line). Each invalid line is said,
    by its number; the rest are submitted. The same Idempotency-Key again runs nothing twice."""
    who = await caller(request, Scope.SUBMIT)
    kind = bodies.require_type(request, bodies.JSON_TYPES + bodies.LINES_TYPES)
    body = await bodies.read(request, request.app.state.max_body)
    return await run_in_threadpool(service(request).batch, who, kind, body, idempotency_key)


@router.get("/batches/{batch_id}", response_model=BatchProgressOut, responses=ERRORS)
async def batch_progress(request: Request,
                         batch_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    """How far a batch is: its jobs by status and by verdict."""
    who = await caller(request, Scope.READ)
    return await run_in_threadpool(service(request).batch_progress, who, batch_id)


@router.get("/usage", response_model=UsageOut, responses=ERRORS)
async def tenant_usage(request: Request, since: date | None = None, until: date | None = None,
                       tenant: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
                       ) -> dict[str, Any]:
    """What the key's tenant used per day (UTC), from ``since`` (default: 30 days ago) to
    ``until``: jobs by verdict, CPU-, wall- and peak-memory-seconds, egress bytes. An admin
    key sees every tenant's, or ``tenant``'s."""
    who = await caller(request, Scope.READ)
    return await run_in_threadpool(service(request).usage, who, since, until, tenant)
