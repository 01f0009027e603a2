"""Backups: PostgreSQL is the truth, so a restore of a dump taken mid-run loses no job that the
dump holds. A job the dump saw finished keeps its result; one it saw queued or running is run
(again) by the fleet pointed at the restored database: the reconciler re-enqueues what it finds
queued, the reaper releases what it finds running once its lease and deadline have passed.

As docs/operations.md says for a restore: the workers stop, the database is restored, the
live streams and end announcements Redis holds for the restored jobs are dropped (they may tell
of runs the restored database never saw), the queue's messages are left (a message whose job
is finished, or unknown, is turned away by the claim), and the workers start again.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tasks.streams import done_key, output_key
from tests.faults.rig import ENGINE1, Fleet, remove_fleet_containers, stop_all, wait_for
from tests.services import ADMIN_URL

pytestmark = [pytest.mark.fleet, pytest.mark.integration]
JOBS = 40


def code(i: int) -> str:
    return f"import time; time.sleep({0.3 + (i % 4) / 5:.1f}); print('job {i}')"


def pg_args(url: str) -> list[str]:
    u = make_url(url)
    return ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]


def dump(url: str, path: Path) -> float:
    """``pg_dump -Fc`` of the database at ``url``, as a backup job would run it."""
    t0 = time.monotonic()
    subprocess.run(["pg_dump", "-Fc", *pg_args(url), "-f", str(path), make_url(url).database or ""],
                   check=True, capture_output=True, timeout=120)
    return time.monotonic() - t0


def restore(path: Path) -> str:
    """A new database from the dump (``pg_restore``); its URL."""
    name = f"airlock_restored_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    subprocess.run(["pg_restore", *pg_args(ADMIN_URL), "-d", name, "--no-owner", str(path)],
                   check=True, capture_output=True, timeout=120)
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop(url: str) -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def states(db: sa.Engine) -> dict[str, tuple[str, int]]:
    with db.connect() as conn:
        return {str(r[0]): (r[1], r[2]) for r in conn.execute(sa.text(
            "SELECT id, status, attempt FROM jobs"))}


def test_a_dump_taken_mid_run_restores_with_no_job_lost(
        control_plane: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = control_plane
    s = fleet.configure(lease_s=4.0, lease_grace_s=2.0, reaper_interval_s=1.0,
                        reconcile_after_s=3.0, startup_grace_s=5.0, backstop_s=2.0)
    before = fleet.worker("before", hostname=f"backup-a-{s.fleet[-8:]}")
    jobs = {fleet.submit(code(i), timeout_s=10): i for i in range(JOBS)}
    wait_for("a third of the jobs to finish", lambda: finished(fleet) >= JOBS // 3, 120, 0.2)
    path = tmp_path / "airlock.dump"
    dump_s = dump(s.database_url, path)
    time.sleep(2.0)  # the fleet goes on: results the dump will never see
    stop_all([before])  # the database is lost: its workers stop (here, at once); their job
    # containers are left to the next worker's reaper
    at_loss = states(fleet.db)
    restored_url = restore(path)
    try:
        restored = sa.create_engine(restored_url)
        in_dump = states(restored)
        assert set(in_dump) == set(jobs)  # every job was submitted before the dump
        # Redis's live streams and end announcements may tell of runs the dump never saw.
        fleet.client.redis.delete(*[k(j) for j in jobs for k in (output_key, done_key)])
        fleet.configure(database_url=restored_url)
        after = fleet.worker("after", hostname=f"backup-b-{s.fleet[-8:]}")
        wait_for("every restored job to finish", lambda: all(
            status == "finished" for status, _ in states(restored).values()), 180, 0.5)
        report = check(restored, jobs, in_dump, at_loss)
        wait_for("no job container left (the lost worker's reaped)",
                 lambda: not fleet.leftovers(ENGINE1), 60, 0.5)
        after.stop()
        restored.dispose()
    finally:
        fleet.configure(database_url=s.database_url)
        stop_all(fleet.workers)
        remove_fleet_containers(s, (ENGINE1,))
        drop(restored_url)
    with capsys.disabled():
        print(f"\nbackup: pg_dump -Fc mid-run took {dump_s:.2f} s; {report}")


def check(db: sa.Engine, jobs: dict[str, int], in_dump: dict[str, tuple[str, int]],
          at_loss: dict[str, tuple[str, int]]) -> str:
    with db.connect() as conn:
        rows = {str(r[0]): (r[1], r[2], bytes(r[3] or b"")) for r in conn.execute(sa.text(
            "SELECT id, status, verdict, stdout FROM jobs"))}
        finished_attempts = Counter(str(r[0]) for r in conn.execute(sa.text(
            "SELECT job_id FROM attempts WHERE outcome = 'finished'")))
    assert set(rows) == set(jobs)  # never lost
    for job, (status, verdict, stdout) in rows.items():
        assert status == "finished" and verdict == "ok", (job, status, verdict)
        assert stdout == f"job {jobs[job]}\n".encode(), job
        assert finished_attempts[job] == 1, job  # one result per job in the restored database
    kept = [j for j, (status, _) in in_dump.items() if status == "finished"]
    rerun = [j for j in jobs if j not in kept]
    # A job the dump saw finished was not run again: its attempt is the dump's.
    with db.connect() as conn:
        attempts = {str(r[0]): r[1] for r in conn.execute(sa.text("SELECT id, attempt FROM jobs"))}
    assert all(attempts[j] == in_dump[j][1] for j in kept)
    dump_counts = Counter(status for status, _ in in_dump.values())
    finished_since = sum(1 for j in rerun if at_loss[j][0] == "finished")
    return (f"the dump held {dict(dump_counts)} of {JOBS} jobs; restored and served by a new"
            f" worker: {JOBS} finished, lost 0; {len(kept)} kept their result, {len(rerun)} run"
            f" again ({finished_since} of which had finished after the dump, before the loss)")


def finished(fleet: Fleet) -> int:
    return int(fleet.sql("SELECT count(*) FROM jobs WHERE status = 'finished'")[0][0])
