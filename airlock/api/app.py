"""``airlock api``: the HTTP API, an ASGI app under uvicorn. Its OpenAPI 3 document is at
/openapi.json, generated from the job contract's model and the answers' (airlock/api/models.py).

Backends in any language submit, follow and cancel their own jobs with a tenant's key; none
holds the database's password or the broker's URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from airlock.api import file_routes, metrics, problems, routes
from airlock.api.models import HealthOut
from airlock.api.service import Service
from base.errors import HostNotSafe
from config.settings import Settings
from tasks.contract import JobSpec


def create_app(s: Settings) -> FastAPI:
    if s.api.key_secret is None or len(s.api.key_secret.get_secret_value()) < 32:
        raise HostNotSafe("AIRLOCK_API_KEY_SECRET must be set, 32 characters at least: keys are"
                          " stored as its HMAC (generate one: openssl rand -hex 32)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = s.api.threads
        app.state.service = Service(s)
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(title="Airlock", version="1", lifespan=lifespan,
                  description="Run untrusted code in fresh, hardened, throwaway containers.")
    app.state.key_secret = s.api.key_secret.get_secret_value().encode()
    app.state.max_body = s.api.max_body_bytes
    app.state.send_timeout_s = s.api.send_timeout_s
    problems.install(app)
    app.add_middleware(metrics.Measured)
    # Before routes': its /jobs/{id}/{stream} would take /jobs/{id}/files (and refuse it).
    app.include_router(file_routes.router)
    app.include_router(routes.router)
    _health(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _health(app: FastAPI) -> None:
    @app.get("/healthz", response_model=HealthOut)
    async def healthz() -> dict[str, Any]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=HealthOut, responses=routes.ERRORS)
    async def readyz(request: Request) -> dict[str, Any]:
        """PostgreSQL and Redis answer (else 503, with Retry-After)."""
        checks = await run_in_threadpool(request.app.state.service.ready)
        if any(v != "ok" for v in checks.values()):
            raise problems.Problem(503, "unavailable", "Not ready",
                                   "; ".join(f"{k}: {v}" for k, v in checks.items()),
                                   headers={"Retry-After": str(problems.RETRY_AFTER_S)})
        return {"status": "ok", "checks": checks}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The document, with the job contract's schema (the request bodies refer to it)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = spec.pop("$defs", {})
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(defs)
        schemas["JobSpec"] = spec
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
    return app.openapi_schema


def serve(s: Settings, host: str | None = None, port: int | None = None) -> None:
    app = create_app(s)
    uvicorn.run(app, host=host or s.api.host, port=port or s.api.port, log_config=None,
                proxy_headers=True, server_header=False, access_log=False,
                timeout_keep_alive=5, limit_concurrency=1024)
