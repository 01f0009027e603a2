"""Files in and out (issue 17), end to end: a job gets binary files and a tar archive in
/workspace (executables keep their bit), names files to collect, and its caller lists them,
reads any byte range of them and downloads them, through the client and the CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from base.errors import NoSuchFile
from config.settings import Settings
from tasks import results
from tasks.context import WorkerContext, build_context
from tasks.store import Claim, Outcome
from tests.conftest import RunJob, check_reads
from tests.services import ROOT, worker_env
from workers.collecting import Collection, Entry, Status
from workers.spool import Spool

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]
MiB = 1024**2


def airlock(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT,
                          env=worker_env(settings), capture_output=True, timeout=120)


def tar_b64(files: dict[str, tuple[bytes, int]]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def test_binary_files_and_an_archive_land_in_the_workspace_executables_runnable(
        run_job: RunJob) -> None:
    blob = bytes(range(256)) * 1024
    archive = tar_b64({"./tools/hello.sh": (b"#!/bin/sh\necho hello from $0\n", 0o750),
                       "./data/table.csv": (b"a,b\n1,2\n", 0o600)})
    record = run_job(argv=["sh", "-c", "./tools/hello.sh && stat -c '%a %n' tools/hello.sh "
                           "data/table.csv blob.bin && sha256sum blob.bin"],
                     files_b64={"blob.bin": base64.b64encode(blob).decode()},
                     archive_b64=archive, profile="shell")
    assert record.verdict == "ok", record.summary() + record.stderr
    lines = record.stdout.splitlines()
    assert lines[0] == "hello from ./tools/hello.sh"
    assert lines[1:4] == ["755 tools/hello.sh", "644 data/table.csv", "644 blob.bin"]
    assert lines[4].split()[0] == hashlib.sha256(blob).hexdigest()


MAKE = r"""
import os
os.makedirs("out/sub", exist_ok=True)
data = bytes((i * 7) % 251 for i in range(3 * 2**20 + 5))
open("out/big.bin", "wb").write(data)
open("out/sub/notes.txt", "w").write("notes\n")
open("out/run.sh", "w").write("#!/bin/sh\n")
os.chmod("out/run.sh", 0o755)
open("report.pdf", "wb").write(b"%PDF-1.7 fake")
open("not-asked.txt", "w").write("stays")
print("made")
"""
BIG = bytes((i * 7) % 251 for i in range(3 * MiB + 5))


def test_collected_files_are_listed_read_in_ranges_and_downloaded(
        run_job: RunJob, client: Airlock, settings: Settings, tmp_path: Path) -> None:
    record = run_job(MAKE, collect=["out/**", "report.pdf", "missing/*.png"])
    assert record.verdict == "ok", record.summary()
    assert record.files == {"collected": 4, "bytes": len(BIG) + 6 + 10 + 13, "refused": 0,
                            "unmatched": ["missing/*.png"]}
    rows = {r.path: r for r in client.files(record.id)}
    assert set(rows) == {"out/big.bin", "out/sub/notes.txt", "out/run.sh", "report.pdf"}
    big = rows["out/big.bin"]
    assert (big.size, big.sha256, big.mode) == (len(BIG), hashlib.sha256(BIG).hexdigest(), 0o644)
    assert rows["out/run.sh"].mode == 0o755
    check_reads(client, record.id, "out/big.bin", BIG)
    with pytest.raises(NoSuchFile):
        list(client.download(record.id, "not-asked.txt"))

    saved = client.save_files(record.id, tmp_path / "got")
    assert not [s for s in saved if s.problem]
    assert (tmp_path / "got/out/big.bin").read_bytes() == BIG
    assert os.stat(tmp_path / "got/out/run.sh").st_mode & 0o777 == 0o755
    assert (tmp_path / "got/report.pdf").read_bytes() == b"%PDF-1.7 fake"
    assert not (tmp_path / "got/not-asked.txt").exists()

    shown = airlock(settings, "result", record.id)
    assert b"4 files collected" in shown.stderr and b"airlock files " + record.id.encode() in shown.stderr
    listed = airlock(settings, "files", record.id)
    assert listed.returncode == 0, listed.stderr
    assert b"out/big.bin" in listed.stdout and b"matched nothing: missing/*.png" in listed.stderr
    cli_out = tmp_path / "cli"
    done = airlock(settings, "files", record.id, "--out", str(cli_out))
    assert done.returncode == 0, done.stderr
    assert (cli_out / "out/sub/notes.txt").read_text() == "notes\n"
    again = airlock(settings, "files", record.id, "--out", str(cli_out))  # never overwrites
    assert again.returncode == 1 and b"File exists" in again.stdout
    manifest = json.loads(airlock(settings, "files", record.id, "--json").stdout)
    assert manifest["summary"]["collected"] == 4 and len(manifest["files"]) == 4


def test_run_with_files_in_and_collect_through_the_cli(settings: Settings, worker: object,
                                                       tmp_path: Path) -> None:
    (tmp_path / "input.bin").write_bytes(b"\x00\xff" * 1000)
    (tmp_path / "job.py").write_text(
        "import os\nos.makedirs('out', exist_ok=True)\n"
        "open('out/copy.bin', 'wb').write(open('in/data.bin', 'rb').read()[::-1])\n")
    done = airlock(settings, "run", str(tmp_path / "job.py"),
                   "--file", f"in/data.bin={tmp_path / 'input.bin'}", "--collect", "out/**",
                   "--collect", "nothing")
    assert done.returncode == 0, done.stderr
    assert b"1 files collected (2000 bytes), 1 patterns matched nothing" in done.stderr
    job_id = done.stderr.split(b"airlock files ")[1].split()[0].decode()
    got = airlock(settings, "files", job_id, "--out", str(tmp_path / "o"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "o/out/copy.bin").read_bytes() == (b"\x00\xff" * 1000)[::-1]


def test_a_job_without_collect_keeps_no_files(run_job: RunJob, client: Airlock) -> None:
    record = run_job("open('x', 'w').write('x')")
    assert record.files is None and client.files(record.id) == []


def test_a_batch_fetches_each_jobs_files_into_a_folder_of_its_own(
        settings: Settings, worker: object, tmp_path: Path) -> None:
    lines = [json.dumps({"code": f"import os\nos.makedirs('out', exist_ok=True)\n"
                                 f"open('out/n.txt', 'w').write('{n}')\n", "collect": ["out/*"]})
             for n in range(3)]
    lines.insert(1, json.dumps({"code": "print('no files')"}))
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    got = tmp_path / "files"
    cmd = ["submit", str(tmp_path / "jobs.jsonl"), "--files-dir", str(got), "--out",
           str(tmp_path / "results.jsonl")]
    done = airlock(settings, *cmd)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(got)) == ["line-1", "line-3", "line-4"]
    assert [(got / f"line-{i}" / "out/n.txt").read_text() for i in (1, 3, 4)] == ["0", "1", "2"]
    rows = {json.loads(r)["item"]: json.loads(r) for r in
            (tmp_path / "results.jsonl").read_text().splitlines()}
    assert rows[1]["files_dir"] == str(got / "line-1") and "files_dir" not in rows[2]
    again = airlock(settings, *cmd)  # resumed: fetched, not run; the folders left as they are
    assert again.returncode == 0, again.stderr
    assert sorted(os.listdir(got)) == ["line-1", "line-3", "line-4"]


def test_a_worker_whose_volumes_are_in_memory_refuses_collect_clearly(
        settings: Settings, artifacts: Path) -> None:
    """The client's fleet settings say btrfs, the worker's tmpfs: the host cannot read a
    tmpfs once its container is gone, so the worker ends the job unrun, saying why."""
    import uuid

    from tests.services import WorkerProcess

    tag = uuid.uuid4().hex[:8]
    s = settings.but(fleet=f"tmpfs-{tag}", queue=f"airlock-tmpfs-{tag}")
    worker = WorkerProcess(s.but(storage="tmpfs"), artifacts / f"worker-tmpfs-{tag}.log").start()
    client = Airlock(s)
    try:
        record = client.submit(code="print('never')", collect=["out/**"]).wait(60)
        assert record.verdict == "error" and record.stdout == "", record.summary()
        assert record.error is not None and "AIRLOCK_STORAGE=tmpfs" in record.error
        assert "collecting files needs btrfs storage" in record.error
        plain = client.submit(code="print('fine')").wait(60)  # without collect it runs
        assert plain.verdict == "ok" and plain.stdout == "fine\n"
    finally:
        client.close()
        worker.stop()


@dataclass
class Stored:
    """An attempt at the results' end: claimed, its spool holding one file, collected."""

    ctx: WorkerContext
    claim: Claim
    spool: Spool
    files: Collection

    def record(self) -> None:
        outcome = Outcome(verdict="ok", exit_code=0, files=self.files.summary())
        results.record(self.ctx, self.claim, outcome, self.ctx.live_relay().publisher(
            self.claim.job_id), spool=self.spool, files=self.files)


@pytest.fixture
def stored(client: Airlock, settings: Settings, tmp_path: Path) -> Iterator[Stored]:
    job_id, _ = client.store.create(spec={"code": "1"}, profile="python", image="x", limits={},
                                    idempotency_key=None, label=None)
    with client.store.engine.begin() as conn:  # admitted by hand: this test claims it itself
        conn.execute(sa.text("UPDATE jobs SET admitted_at = now() WHERE id = :j"), {"j": job_id})
    ctx = build_context(settings)
    claim = ctx.store.claim(job_id, host="t", lease_s=30, overhead_s=60)
    assert claim is not None
    spool = Spool(str(tmp_path), "airlock-spool-test").open()
    size = 40 * MiB  # incompressible: 32 MiB of its frames are committed along the way
    spool.write_at(0, memoryview(os.urandom(size)))
    spool.keep(size)
    files = Collection([Entry(b"out/a", Status.COLLECTED, None, size, 0o644, "0" * 64, 0)])
    try:
        yield Stored(ctx, claim, spool, files)
    finally:
        spool.remove()
        ctx.store.engine.dispose()


def frames_of(client: Airlock, job_id: str) -> int:
    with client.store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM job_blobs WHERE job_id = :j"),
                                {"j": job_id}).scalar_one())


def test_files_the_worker_cannot_read_back_are_said_lost_and_the_result_still_stored(
        client: Airlock, stored: Stored) -> None:
    """The spool on the worker's own disk fails between collecting and storing: the job keeps
    its verdict, its record says its files were not kept and why, no frame of them is left."""
    job_id = stored.claim.job_id
    os.truncate(os.path.join(stored.spool.folder, "files"), 36 * MiB)  # the disk lost a part
    stored.record()
    record = client.result(job_id)
    assert record.verdict == "ok" and record.files is not None
    assert record.files["collected"] == 0 and "could not read them back" in record.files["stopped"]
    assert client.files(job_id) == [] and frames_of(client, job_id) == 0


def test_an_attempt_fenced_out_drops_what_it_stored(client: Airlock, stored: Stored,
                                                    settings: Settings) -> None:
    """A stale attempt stores its files, then finds another attempt's result is the job's:
    what it stored goes at once (nobody could ever read it)."""
    job_id = stored.claim.job_id
    with client.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET lease_until = now() - interval '1 hour',"
                             " run_deadline = now() - interval '1 hour' WHERE id = :j"),
                     {"j": job_id})
    newer = client.store.claim(job_id, host="u", lease_s=30, overhead_s=60)
    assert newer is not None and newer.attempt == 2
    assert client.store.finish(job_id, 2, Outcome(verdict="ok", exit_code=0), 1024)
    stored.record()  # attempt 1: fenced
    assert client.result(job_id).attempt == 2
    assert frames_of(client, job_id) == 0 and client.files(job_id) == []
