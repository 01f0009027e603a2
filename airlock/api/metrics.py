"""The API's own Prometheus metrics: requests by route, method and status, and their latency.
The route is the template (``/v1/jobs/{job_id}``), never a path with an id: cardinality stays
bounded whatever clients send; unknown paths count as one route."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
REQUESTS = Counter("airlock_api_requests_total", "API requests answered",
                   ("route", "method", "status"), registry=REGISTRY)
LATENCY = Histogram("airlock_api_request_seconds", "Time to answer an API request (to its"
                    " first byte for a stream)", ("route", "method"), registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30, 60))


def route_of(scope: Scope) -> str:
    """The matched route's template (the router notes it in the scope), or "unmatched"."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


class Measured:
    """ASGI middleware: each request counted by its answer's status, timed to its first byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # an exception before any answer is the server's error

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                LATENCY.labels(route_of(scope), scope["method"]).observe(time.perf_counter() - t0)
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            REQUESTS.labels(route_of(scope), scope["method"], str(status)).inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)
