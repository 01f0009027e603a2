"""The API against its own OpenAPI document: schemathesis generates requests from the schema
(bodies, paths, headers, queries), sends them to a real ``airlock api``, and checks every
answer: never a 5xx, a status and a content type the document promises, a body its schema
describes. Jobs it submits go to a queue no worker reads (they are only ever queued)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from airlock.client import Airlock
from config.settings import Settings
from tasks.keys import Scope
from tasks.tenancy import TenantStore
from tests.services import ApiProcess

pytestmark = pytest.mark.integration
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def idle_api(api_settings: Settings, artifacts: Path) -> Iterator[ApiProcess]:
    queue = f"{api_settings.queue}-unread-{secrets.token_hex(3)}"
    proc = ApiProcess(api_settings.but(queue=queue), artifacts / "api-schema.log",
                      AIRLOCK_API_MAX_WAIT_S="1").start()
    try:
        yield proc
    finally:
        proc.stop()
        redis.Redis.from_url(api_settings.broker_url).delete(queue)


@pytest.fixture(scope="module")
def fuzz_key(api_settings: Settings, tenants: TenantStore) -> Iterator[str]:
    """A tenant of its own, whose queued jobs are cancelled afterwards (else the session
    worker's reconciler would find them stranded, and run them)."""
    assert api_settings.api.key_secret is not None
    tenants.create("fuzz")
    yield tenants.create_key("fuzz", Scope.SUBMIT,
                             api_settings.api.key_secret.get_secret_value().encode()).token
    with tenants.engine.begin() as conn:
        queued = conn.execute(sa.text("SELECT id FROM jobs WHERE tenant = 'fuzz'"
                                      " AND status = 'queued'")).scalars().all()
    client = Airlock(api_settings)
    try:
        for job in queued:
            client.cancel(str(job))
    finally:
        client.close()


@pytest.fixture(scope="module")
def api_schema(idle_api: ApiProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{idle_api.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                  HealthCheck.function_scoped_fixture])
def test_every_answer_is_one_the_schema_promises(case: schemathesis.Case,
                                                 idle_api: ApiProcess,
                                                 fuzz_key: str) -> None:
    case.call_and_validate(base_url=idle_api.url, checks=CHECKS,
                           headers={"Authorization": f"Bearer {fuzz_key}"},
                           timeout=30)
