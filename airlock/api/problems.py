"""Errors as RFC 9457 problem details (``application/problem+json``), from one error tree.

Every refusal the API makes is a ``Problem``, or one of Airlock's errors translated here at the
boundary: a contract error is 422 naming its field, an unknown job (or another tenant's) 404,
PostgreSQL away 503 with Retry-After. Nothing else reaches a client: an unexpected error is a
bare 500 whose text says nothing of the server (it is logged, with its traceback).
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from airlock.terminal import one_line
from base.errors import (
    AirlockError,
    BrokerUnavailable,
    DatabaseUnavailable,
    JobNotFound,
    JobSpecError,
    NoSuchFile,
    QuotaExceeded,
    preview,
)

log = structlog.get_logger(__name__)
MEDIA = "application/problem+json"
BASE = "https://airlock.invalid/problems/"  # types are names, not pages to fetch
RETRY_AFTER_S = 5


class ProblemOut(BaseModel):
    """RFC 9457 problem details, plus ``field``: the field the contract refused, or the quota
    that refused (429)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


class Problem(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str, *,
                 field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.field, self.headers = field, headers or {}


def response(p: Problem) -> JSONResponse:
    body: dict[str, Any] = {"type": BASE + p.slug, "title": p.title, "status": p.status,
                            "detail": preview(one_line(p.detail), 500)}
    if p.field is not None:
        body["field"] = preview(p.field, 200)
    return JSONResponse(body, status_code=p.status, media_type=MEDIA, headers=p.headers)


def translate(exc: Exception) -> Problem:
    """The one boundary where Airlock's errors become problems."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, JobSpecError):
        return Problem(422, "invalid-job", "The job is invalid", str(exc), field=exc.field)
    if isinstance(exc, QuotaExceeded):
        after = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER_S
        return Problem(429, "quota", "Quota exceeded", str(exc), field=exc.quota or None,
                       headers={"Retry-After": str(max(1, math.ceil(after)))})
    if isinstance(exc, NoSuchFile):
        return Problem(404, "no-such-file", "Not found", str(exc))
    if isinstance(exc, JobNotFound):
        return Problem(404, "not-found", "Not found", str(exc))
    if isinstance(exc, DatabaseUnavailable):
        return Problem(503, "unavailable", "PostgreSQL is unavailable",
                       "nothing was written; try again",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, BrokerUnavailable):
        return Problem(503, "unavailable", "Redis is unavailable", "try again",
                       headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, AirlockError):
        return Problem(400, "bad-request", "Bad request", str(exc))
    return Problem(500, "internal", "Internal error", "the server failed; it was logged")


def install(app: FastAPI) -> None:
    async def airlock_error(request: Request, exc: Exception) -> JSONResponse:
        problem = translate(exc)
        if problem.status >= 500 and not isinstance(exc, AirlockError):
            log.error("api.internal_error", path=request.url.path, exc_info=exc)
        return response(problem)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        return response(Problem(exc.status_code, "http", titles.get(exc.status_code, "Error"),
                                str(exc.detail), headers=dict(exc.headers or {})))

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return response(Problem(422, "invalid-request", "The request is invalid",
                                f"{where}: {first.get('msg', 'invalid')}", field=where))

    app.add_exception_handler(Problem, airlock_error)
    app.add_exception_handler(AirlockError, airlock_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, airlock_error)
