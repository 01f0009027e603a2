"""Collected files are never silently lost (issue 17): a worker SIGKILLed while storing a job's
files leaves no half-stored set visible and the retry stores them whole; PostgreSQL going
down while they are stored is waited out and nothing is lost. The worker reaches PostgreSQL
through the test's proxy (tests/faults/rig.py PgProxy), which holds the statement carrying
one file's first frame (its blob name, ``file:<n>``, is in the statement's parameters)."""

from __future__ import annotations

import hashlib
import random
import signal
import time

import pytest

from tests.faults.rig import Fleet, PgProxy, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MiB = 1024**2
EACH = 20 * MiB  # incompressible: frames are committed every 32 MiB, so a set is cut mid-way


def job_code(files: int) -> str:
    return ("import os, random\nos.makedirs('out', exist_ok=True)\n"
            f"for i in range({files}):\n"
            f"    open(f'out/f{{i}}', 'wb').write(random.Random(i).randbytes({EACH}))\n")


def expected(files: int) -> dict[str, str]:
    return {f"out/f{i}": hashlib.sha256(random.Random(i).randbytes(EACH)).hexdigest()
            for i in range(files)}


def stored_rows(fleet: Fleet, job: str) -> dict[int, tuple[int, int]]:
    """Per attempt: (frames, manifest entries) in the tables, visible or not."""
    frames = dict(fleet.sql("SELECT attempt, count(*) FROM job_blobs WHERE job_id = :j"
                            " GROUP BY attempt", j=job))
    entries = dict(fleet.sql("SELECT attempt, count(*) FROM job_files WHERE job_id = :j"
                             " GROUP BY attempt", j=job))
    return {a: (frames.get(a, 0), entries.get(a, 0)) for a in frames.keys() | entries.keys()}


def whole(fleet: Fleet, job: str, files: int) -> None:
    """Every file visible, each byte for byte (its sha256 as the job made it)."""
    rows = fleet.client.files(job)
    assert {r.path: r.sha256 for r in rows} == expected(files)
    for row in rows:
        data = b"".join(fleet.client.read_file(job, row))
        assert len(data) == EACH and hashlib.sha256(data).hexdigest() == row.sha256


def test_a_worker_sigkilled_while_storing_files_leaves_no_half_set_and_the_retry_stores_them(
        fleet: Fleet, pg_proxy: PgProxy) -> None:
    pg_proxy.arm("hold_statement", b"file:2")
    w1 = fleet.worker("w1", database_url=pg_proxy.url(fleet.settings.database_url))
    job = fleet.submit(job_code(4), collect=["out/*"], timeout_s=60)
    wait_for("the third file's frames to be held", pg_proxy.fired.is_set, 90)
    time.sleep(0.5)

    # Half a set is in the tables (the first 32 MiB committed), and none of it is visible.
    half = stored_rows(fleet, job)
    assert half.get(1, (0, 0))[0] >= 32 and half[1][1] == 0, half
    assert fleet.client.files(job) == [] and fleet.record(job).status == "running"
    assert list(fleet.client.outputs.read(job, "file:0")) == []  # its frames, fenced
    w1.stop(signal.SIGKILL)  # the worker and its pool process, mid-store
    pg_proxy.cut_all()  # its held connection goes: the open transaction rolls back
    assert fleet.client.files(job) == []

    fleet.expire_deadline(job)  # time passes (its container went before the store began)
    fleet.worker("w2")  # straight to PostgreSQL; its reconciler hands the job out again
    record = fleet.wait(job, 180)
    assert (record.verdict, record.attempt) == ("ok", 2), record
    assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]
    assert record.files == {"collected": 4, "bytes": 4 * EACH, "refused": 0}
    whole(fleet, job, 4)
    assert set(stored_rows(fleet, job)) == {2}  # attempt 1's half set went with the result
    assert not fleet.leftovers()


def test_postgres_down_while_storing_files_is_waited_out_and_nothing_is_lost(
        fleet: Fleet, pg_proxy: PgProxy) -> None:
    pg_proxy.arm("hold_statement", b"file:1")
    w = fleet.worker(database_url=pg_proxy.url(fleet.settings.database_url))
    job = fleet.submit(job_code(3), collect=["out/*"], timeout_s=60)
    wait_for("the second file's frames to be held", pg_proxy.fired.is_set, 90)
    pg_proxy.down()  # refused and cut: the store fails, again and again
    wait_for("the store to be retried", lambda: "job.result_write_retry" in w.log(), 20)
    time.sleep(8)
    pg_proxy.up()

    record = fleet.wait(job, 120)
    assert (record.verdict, record.attempt) == ("ok", 1), record
    assert record.files == {"collected": 3, "bytes": 3 * EACH, "refused": 0}
    whole(fleet, job, 3)
    assert set(stored_rows(fleet, job)) == {1}
    assert [a.outcome for a in fleet.attempts(job)] == ["finished"]
    assert not fleet.leftovers()
