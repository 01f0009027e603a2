"""Backends that are not Python: a curl script and a Node.js script (fetch) each submit a job,
follow its events and read the result, 42; and the Python client over HTTP, method for
method as the direct one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from airlock.client import Airlock
from airlock.http_client import HttpAirlock
from base.errors import JobNotFound, JobSpecError
from tests.services import ApiProcess, WorkerProcess, free_port

pytestmark = pytest.mark.integration
CLIENTS = Path(__file__).parent / "clients"


def test_a_curl_backend(api: ApiProcess, keys: dict[str, str], worker: WorkerProcess) -> None:
    done = subprocess.run(["bash", str(CLIENTS / "session.sh"), api.url, keys["tenant-a:submit"]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("submitted ") and lines[-1] == "verdict ok stdout 42"
    assert "stdout" in lines and lines[-2] == "end"


def test_a_node_fetch_backend(api: ApiProcess, keys: dict[str, str], worker: WorkerProcess) -> None:
    done = subprocess.run(["node", str(CLIENTS / "session.mjs"), api.url, keys["tenant-b:submit"]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "verdict ok stdout 42 streamed 42"
    assert "stdout" in lines and lines[-2] == "end"


def test_the_python_client_over_http_is_the_direct_one(api: ApiProcess, keys: dict[str, str],
                                                       worker: WorkerProcess) -> None:
    client = Airlock(url=api.url, api_key=keys["tenant-a:submit"])
    assert isinstance(client, HttpAirlock)
    try:
        handle = client.submit(code="import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
                                    "sys.exit(3)", limits={"timeout_s": 30})
        events = list(handle.events())
        record = handle.wait(60)
        assert (record.verdict, record.exit_code, record.tenant) == ("nonzero_exit", 3, "tenant-a")
        assert record.stdout == "out\n" and record.stderr == "err\n"
        assert b"".join(e.data for e in events if e.kind == "stdout") == b"out\n"
        assert events[-1].kind == "end" and events[-1].summary["verdict"] == "nonzero_exit"
        assert b"".join(client.output(handle.id, "stdout")) == b"out\n"
        # resumed from an event's offset: exactly what came after it
        rest = list(client.events(handle.id, events[0].offset))
        assert [e.kind for e in rest] == [e.kind for e in events[1:]]
        with pytest.raises(JobSpecError) as refused:
            client.submit(code="print(1)", limits={"cpus": 99})
        assert refused.value.field == "limits.cpus"
        with pytest.raises(JobNotFound):
            client.result("00000000-0000-0000-0000-000000000000")
        slow = client.submit(code="import time\ntime.sleep(30)", limits={"timeout_s": 60})
        assert client.cancel(slow.id) in ("cancelled", "cancelling")
        assert client.wait(slow.id, 60).verdict == "cancelled"
    finally:
        client.close()


def test_the_cli_over_http_needs_no_database(api: ApiProcess, keys: dict[str, str],
                                             worker: WorkerProcess, tmp_path: Path) -> None:
    """With AIRLOCK_API_URL and _KEY set, `airlock run`, `logs --follow` and `submit` speak
    HTTP: PostgreSQL and Redis point at ports nothing listens on, and all still work."""
    dead = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")} | {
        "AIRLOCK_API_URL": api.url, "AIRLOCK_API_KEY": keys["tenant-b:submit"],
        "AIRLOCK_DATABASE_URL": f"postgresql+psycopg://x@{dead}/x",
        "AIRLOCK_REDIS_URL": f"redis://{dead}/0", "AIRLOCK_BROKER_URL": f"redis://{dead}/0"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "airlock.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    ran = cli("run", "-c", "import sys; print(6 * 7); sys.exit(4)")  # streamed over SSE
    assert (ran.returncode, ran.stdout) == (4, "42\n"), ran.stderr
    ran = cli("run", "--json", "-c", "import sys; print(6 * 7); sys.exit(4)")
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert (record["verdict"], record["tenant"], record["stdout"]) == ("nonzero_exit",
                                                                      "tenant-b", "42\n")
    logs = cli("logs", "--follow", record["id"])
    assert logs.returncode == 0 and logs.stdout.startswith("42\n"), logs.stderr
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"code": "print(1)"}\n{"code": 5}\n{"code": "print(2)"}\n')
    out = tmp_path / "out.jsonl"
    batch = cli("submit", str(lines), "--out", str(out))
    assert batch.returncode == 1, batch.stderr  # one malformed line, said by its number
    assert "line 2" in batch.stdout + batch.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["stdout"] for r in results) == ["1\n", "2\n"]


def test_a_batch_over_http(api: ApiProcess, keys: dict[str, str], worker: WorkerProcess) -> None:
    auth = {"Authorization": f"Bearer {keys['tenant-a:submit']}", "Idempotency-Key": "b-1"}
    body = b'{"code": "print(1)"}\n{"code": "import sys; sys.exit(3)"}\nnot json\n' \
           b'{"code": "print(3)", "limits": {"cpus": 9}}\n'
    with httpx.Client(base_url=api.url, timeout=60) as c:
        sent = c.post("/v1/batches", content=body,
                      headers=auth | {"Content-Type": "application/x-ndjson"})
        assert sent.status_code == 201, sent.text
        batch = sent.json()
        assert (batch["items"], batch["submitted"], batch["invalid"]) == (4, 2, 2)
        errors = {line["line"]: line["error"] for line in batch["lines"] if line["error"]}
        assert set(errors) == {3, 4} and "limits.cpus" in errors[4]
        again = c.post("/v1/batches", content=body,
                       headers=auth | {"Content-Type": "application/x-ndjson"}).json()
        assert [line.get("id") for line in again["lines"]] == \
            [line.get("id") for line in batch["lines"]]  # nothing runs twice
        assert not any(line.get("created") for line in again["lines"])
        deadline = time.monotonic() + 60
        while True:
            progress = c.get(f"/v1/batches/{batch['batch']}", headers=auth).json()
            if progress["by_status"].get("finished") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert progress["by_verdict"] == {"ok": 1, "nonzero_exit": 1}, progress
