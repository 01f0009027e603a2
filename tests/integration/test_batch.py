"""`airlock submit`: a batch of 100 jobs with bad lines, interrupted and resumed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks.models import Attempt, Job
from tests.conftest import ARTIFACTS
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]
BAD = {12: "{oops", 51: json.dumps({"code": "x", "limits": {"timeout_s": -1}}), 83: "[1, 2]"}


def batch_file(path: Path) -> dict[int, int]:
    """100 jobs (every 25th exits 1) and three bad lines; returns line number -> job number."""
    lines, jobs = [], {}
    n = 0
    while n < 100:
        number = len(lines) + 1
        if number in BAD:
            lines.append(BAD[number])
            continue
        code = f"import sys\nprint({n})\nsys.exit({1 if n % 25 == 24 else 0})"
        lines.append(json.dumps({"code": code, "limits": {"timeout_s": 30}}))
        jobs[number] = n
        n += 1
    path.write_text("\n".join(lines) + "\n")
    return jobs


def test_batch_interrupted_and_resumed_runs_each_job_once(
        settings: Settings, client: Airlock, worker: WorkerProcess, tmp_path: Path) -> None:
    jobs = batch_file(tmp_path / "jobs.jsonl")
    out, table = tmp_path / "results.jsonl", tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "airlock.cli", "submit", str(tmp_path / "jobs.jsonl"),
           "--in-flight", "6", "--out", str(out), "--csv", str(table)]
    env = worker_env(settings, COLUMNS="100")
    with client.store.engine.connect() as conn:  # other tests' batches share this database
        since = conn.execute(sa.select(sa.func.now())).scalar_one()
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not out.exists() or len(out.read_text().splitlines()) < 20:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.1)
    finally:
        first.kill()  # SIGKILL midway: no clean-up of its own
        first.communicate()
    before = len(out.read_text().splitlines())
    assert 20 <= before < 100

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    (ARTIFACTS / "batch-resumed-run.txt").write_text(second.stdout + second.stderr)
    assert second.returncode == 1, second.stderr  # 1: some lines were malformed
    for number in BAD:
        assert f"line {number}:" in second.stderr, second.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100
    assert sorted(r["item"] for r in rows) == sorted(jobs)
    for row in rows:
        n = jobs[row["item"]]
        assert row["stdout"] == f"{n}\n"
        assert row["verdict"] == ("nonzero_exit" if n % 25 == 24 else "ok"), row
        assert row["attempt"] == 1
    assert Counter(r["verdict"] for r in rows) == {"ok": 96, "nonzero_exit": 4}
    assert sum(r["reused"] for r in rows) >= before  # fetched, not run again
    assert "96" in second.stdout and "nonzero_exit" in second.stdout  # the summary table
    with table.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 100

    # In the database: one job per line, each run by exactly one attempt.
    ids = [uuid.UUID(r["id"]) for r in rows]
    with client.store.engine.connect() as conn:
        keyed = conn.execute(sa.select(sa.func.count()).where(
            Job.idempotency_key.like("batch:%"), Job.queued_at >= since)).scalar_one()
        per_job = conn.execute(sa.select(Attempt.job_id, sa.func.count()).where(
            Attempt.job_id.in_(ids)).group_by(Attempt.job_id)).all()
    assert keyed == 100
    assert len(per_job) == 100 and all(count == 1 for _, count in per_job)
