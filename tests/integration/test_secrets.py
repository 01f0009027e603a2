"""Job secrets through the real path: ``airlock secret`` on the real PostgreSQL, and a job that
names one, run by a real worker. The value reaches the job's environment and nowhere else
Airlock keeps anything: not the row (spec, provenance, error), the attempts, the stored output,
the live stream in Redis, the worker's log."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks import streams
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration]

PRINT_DIGEST = ("import hashlib, os\n"
                "print(hashlib.sha256(os.environ['TOOL_TOKEN'].encode()).hexdigest())\n")


def airlock(settings: Settings, *args: str, stdin: bytes = b"",
            **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT, input=stdin,
                          env=worker_env(settings) | env, capture_output=True, timeout=120)


def fresh_value() -> str:
    return "tok-" + os.urandom(12).hex()


def everything_stored(settings: Settings, job_id: str) -> bytes:
    """Every byte the database holds of the job, and of its stream and end in Redis."""
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = [conn.execute(sa.text(f"SELECT * FROM {table} WHERE {key} = :id"),
                                 {"id": job_id}).all()
                    for table, key in (("jobs", "id"), ("attempts", "job_id"),
                                       ("job_blobs", "job_id"))]
    finally:
        engine.dispose()
    r = streams.connect(settings.redis_url)
    try:
        stream = r.xrange(streams.output_key(job_id))
        done = repr(r.xrange(streams.done_key(job_id))).encode()
    finally:
        r.close()
    return repr(rows).encode() + repr(stream).encode() + done


@pytest.fixture
def token(settings: Settings) -> Iterator[str]:
    value = fresh_value()
    done = airlock(settings, "secret", "set", "default", "TOOL_TOKEN", stdin=value.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    yield value
    airlock(settings, "secret", "delete", "default", "TOOL_TOKEN")


def test_set_list_replace_delete_and_the_value_is_never_shown_or_stored_plain(
        settings: Settings) -> None:
    value = fresh_value()
    shown = b""
    done = airlock(settings, "secret", "set", "default", "CLI_TOKEN", stdin=value.encode() + b"\n")
    shown += done.stdout + done.stderr
    assert (done.returncode, done.stdout) == (0, b"default: CLI_TOKEN stored\n"), done.stderr
    again = airlock(settings, "secret", "set", "default", "CLI_TOKEN", stdin=value.encode())
    assert again.stdout == b"default: CLI_TOKEN replaced\n"
    listed = airlock(settings, "secret", "list", "default")
    as_json = airlock(settings, "secret", "list", "default", "--json")
    shown += listed.stdout + listed.stderr + as_json.stdout + again.stdout
    assert listed.returncode == 0 and listed.stdout.startswith(b"CLI_TOKEN  "), listed.stdout
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM secrets WHERE name = 'CLI_TOKEN'")).one()
    finally:
        engine.dispose()
    assert value.encode() not in repr(row).encode() and value not in shown.decode()
    assert airlock(settings, "secret", "delete", "default", "CLI_TOKEN").returncode == 0
    missing = airlock(settings, "secret", "delete", "default", "CLI_TOKEN")
    assert missing.returncode == 1 and b"has no secret CLI_TOKEN" in missing.stderr


@pytest.mark.parametrize(("args", "says", "code"), [
    (["set", "default", "1BAD"], b"name: is not a variable name", 2),
    (["set", "default", "HTTPS_PROXY"], b"reserved", 2),
    (["set", "Not A Tenant", "X"], b"not a tenant's name", 2),
    (["set", "nobody-here", "X"], b"no tenant 'nobody-here'", 1),
    (["list", "default"], b"AIRLOCK_SECRETS_KEY", 1),
])
def test_bad_input_is_refused_in_one_line(settings: Settings, args: list[str], says: bytes,
                                          code: int) -> None:
    env = {"AIRLOCK_SECRETS_KEY": ""} if args[0] == "list" else {}
    done = airlock(settings, "secret", *args, stdin=b"value", **env)
    assert done.returncode == code and says in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_an_empty_value_or_one_with_a_nul_is_refused(settings: Settings) -> None:
    for stdin, says in ((b"\n", b"empty"), (b"a\0b", b"NUL")):
        done = airlock(settings, "secret", "set", "default", "X_TOKEN", stdin=stdin)
        assert done.returncode == 1 and says in done.stderr, done.stderr


def test_a_job_gets_its_secret_in_its_environment_and_nothing_keeps_it(
        settings: Settings, client: Airlock, worker: WorkerProcess, token: str) -> None:
    # Given a tenant's secret, when a job names it
    record = client.submit({"code": PRINT_DIGEST, "secrets": ["TOOL_TOKEN"]}).wait(120)
    # Then the job had it (it printed its digest, not the value)
    assert record.verdict == "ok", record.summary()
    assert record.stdout == hashlib.sha256(token.encode()).hexdigest() + "\n"
    assert (record.provenance or {})["secrets"] == ["TOOL_TOKEN"]
    # And nothing Airlock keeps holds the value: the row, the attempts, the output, Redis, logs
    assert token.encode() not in everything_stored(settings, record.id)
    assert token not in worker.log()


def test_a_job_naming_a_secret_its_tenant_has_not_set_ends_in_an_error_unrun(
        client: Airlock, worker: WorkerProcess) -> None:
    record = client.submit({"code": "print('ran')", "secrets": ["NEVER_SET_TOKEN"]}).wait(120)
    assert record.verdict == "error" and record.stdout == "" and record.container_id is None
    assert "secrets not set for tenant 'default': NEVER_SET_TOKEN" in (record.error or "")


def test_the_cli_runs_a_job_with_a_secret(settings: Settings, worker: WorkerProcess,
                                          token: str) -> None:
    done = airlock(settings, "run", "--secret", "TOOL_TOKEN", "-c", PRINT_DIGEST)
    assert done.returncode == 0, done.stderr
    assert done.stdout == hashlib.sha256(token.encode()).hexdigest().encode() + b"\n"
