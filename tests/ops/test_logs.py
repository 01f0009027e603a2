"""Structured logs: with AIRLOCK_LOG_FORMAT=json a worker's log is JSON lines, Celery's own
lines included, and every line about a job carries its id."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airlock.client import Airlock
from tests.services import WorkerProcess

# Plain lines a worker may still print: the CLI's start-up verdicts (before any job) and
# Celery's one-line shutdown notice, written straight to the terminal.
PLAIN_PREFIXES = ("airlock worker: ", "worker: ")


def _lines(log: str) -> tuple[list[dict[str, Any]], list[str]]:
    events, plain = [], []
    for line in log.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            plain.append(line)
            continue
        if isinstance(value, dict):
            events.append(value)
        else:
            plain.append(line)
    return events, plain


@pytest.mark.integration
def test_celery_lines_and_ours_are_json_and_carry_the_job_id(
        ops_worker: WorkerProcess, ops_client: Airlock) -> None:
    job = ops_client.submit(code="print('hello')")
    assert job.wait(60).verdict == "ok"
    deadline = time.monotonic() + 10
    while "succeeded in" not in ops_worker.log().split(job.id, 1)[-1]:
        assert time.monotonic() < deadline, ops_worker.log()[-2000:]
        time.sleep(0.2)

    events, plain = _lines(ops_worker.log())
    assert not [line for line in plain if not line.startswith(PLAIN_PREFIXES)], plain
    ours = [e for e in events if e.get("job_id") == job.id]
    by_logger = {e["logger"]: e for e in ours}
    received = by_logger["celery.worker.strategy"]  # the main process: job id from argsrepr
    finished = by_logger["tasks.results"]
    succeeded = by_logger["celery.app.trace"]  # the pool process: job id bound for the task
    assert received["event"].endswith("received") and received["task"] == "airlock.run_job"
    assert finished["event"] == "job.finished" and finished["verdict"] == "ok"
    assert "succeeded in" in succeeded["event"]
    assert received["task_id"] == finished["task_id"] == succeeded["task_id"]
    assert finished["process"].startswith("ForkPoolWorker") and received["process"] == "MainProcess"
    for event in (e for e in events if "event" in e):  # log records, not printed summaries
        assert {"level", "timestamp", "logger"} <= event.keys(), event
