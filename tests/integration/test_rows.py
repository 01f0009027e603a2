"""Well-formed rows: absent phases, evidence and provenance are SQL NULL or an object, never
JSON null, nor JSON null merged into an array; migration 0002 repairs rows written before."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from tasks.migrate import upgrade
from tests.services import WorkerProcess, scratch_database

pytestmark = pytest.mark.integration

COLUMNS = "jsonb_typeof(phases), jsonb_typeof(evidence), jsonb_typeof(provenance), phases"


def kinds(db: sa.Engine, job_id: str) -> tuple[str | None, str | None, str | None, object]:
    with db.connect() as conn:
        row = conn.execute(sa.text(f"SELECT {COLUMNS} FROM jobs WHERE id = :id"),
                           {"id": job_id}).one()
    return row[0], row[1], row[2], row[3]


def test_an_error_verdict_row_has_an_object_of_phases_and_sql_null_elsewhere(
        client: Airlock, database_url: str, worker: WorkerProcess) -> None:
    # A job the worker refuses (a network this fleet has off) ends on the error path.
    record = client.submit(code="print(1)", network="egress").wait(60)
    assert record.verdict == "error", record.summary()
    db = sa.create_engine(database_url)
    deadline = time.monotonic() + 10
    try:
        # persist_ms is merged into the phases just after the result (tasks/results.py)
        while (found := kinds(db, record.id))[0] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        phases, evidence, provenance, raw = found
    finally:
        db.dispose()
    assert (phases, evidence, provenance) == ("object", None, None), raw
    record = client.result(record.id)
    assert isinstance(record.phases, dict) and "persist_ms" in record.phases
    assert record.evidence is None and record.provenance is None


@pytest.fixture
def at_0001() -> Iterator[str]:
    with scratch_database("airlock_t_rows", revision="0001") as url:
        yield url


def test_migration_0002_repairs_the_rows_the_error_path_wrote_before(at_0001: str) -> None:
    db = sa.create_engine(at_0001)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    rows = [  # (phases, evidence, provenance) as JSON texts, as the old error path stored them
        ('[null, {"persist_ms": 4}]', "null", "null"),
        ('[{"queue_wait_ms": 2}, {"persist_ms": 5}]', '{"exit_code": 0}', '{"host": "h"}'),
        ("null", "null", '{"host": "h"}'),
    ]
    try:
        with db.begin() as conn:
            for job_id, (phases, evidence, provenance) in zip(ids, rows, strict=True):
                conn.execute(sa.text(
                    "INSERT INTO jobs (id, spec, profile, image, limits, status, attempt,"
                    " cancel_requested, stdout_truncated, stderr_truncated, phases, evidence,"
                    " provenance) VALUES (:id, '{}', 'python', 'i', '{}', 'finished', 1, false,"
                    " false, false, CAST(:p AS jsonb), CAST(:e AS jsonb), CAST(:v AS jsonb))"),
                    {"id": job_id, "p": phases, "e": evidence, "v": provenance})
        upgrade(at_0001)
        got = [kinds(db, job_id) for job_id in ids]
    finally:
        db.dispose()
    assert got[0][:3] == ("object", None, None) and got[0][3] == {"persist_ms": 4}
    assert got[1][:3] == ("object", "object", "object")
    assert got[1][3] == json.loads('{"queue_wait_ms": 2, "persist_ms": 5}')
    assert got[2][:3] == (None, None, "object")
