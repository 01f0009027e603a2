"""Request bodies: bounded before they are read whole, of the right type, and JSON that
cannot take the server down (too deep, too long a number, not UTF-8: 400, never 500)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from airlock.api.problems import Problem

JSON_TYPES = ("application/json",)
LINES_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


def too_large(cap: int) -> Problem:
    return Problem(413, "too-large", "Request body too large",
                   f"the body is over the cap of {cap} bytes (AIRLOCK_API_MAX_BODY_BYTES)")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_type(request: Request, allowed: tuple[str, ...]) -> str:
    kind = media_type(request)
    if kind not in allowed:
        raise Problem(415, "unsupported-media-type", "Unsupported media type",
                      f"send {' or '.join(allowed)}, not {kind or 'no Content-Type'}")
    return kind


async def chunks(request: Request, cap: int) -> AsyncIterator[bytes]:
    """The body as it streams in, refused (413) as soon as it is known to be over ``cap``: by
    its declared length before a byte is read, else once the bytes pass it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large(cap)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise too_large(cap)
        yield chunk


async def read(request: Request, cap: int) -> bytes:
    """The body whole, within ``cap``."""
    return b"".join([chunk async for chunk in chunks(request, cap)])


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Problem(400, "malformed", "Malformed body", "the body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise Problem(400, "malformed", "Malformed body",
                      f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except (ValueError, RecursionError) as exc:  # 5,000-digit numbers; 10,000-deep nesting
        raise Problem(400, "malformed", "Malformed body",
                      "not JSON this server reads: a number too long or nesting too deep") from exc
