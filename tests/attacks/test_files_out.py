"""Files out (ATTACKS.md A39, and A13 for collected paths): a job plants what it can where the
worker will read, names it in ``collect``, and the worker, once the job has ended, reads its
volume. Each test: the worker unharmed (alive, no traceback, memory bounded), a canary job
right after completes (the ``attack`` fixture), and nothing from the host read: a host file
holding a random token keeps its atime and its token appears nowhere Airlock stored anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from airlock.records import JobRecord
from base.errors import JobSpecError
from config.settings import Settings
from tasks import blobs
from tests.attacks.conftest import Attack
from tests.services import ROOT, WorkerProcess, job_count, tree_rss, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
MiB = 1024**2
LINK = "not a regular file: a symbolic link (never followed)"


class HostCanary:
    """A host file (root's, outside every volume) holding a random token, its atime set
    before its mtime: under relatime any read of it would move its atime."""

    def __init__(self, folder: Path) -> None:
        self.token = uuid.uuid4().hex
        self.folder = folder
        folder.mkdir(mode=0o700)
        self.path = folder / "secret"
        self.path.write_text(f"AIRLOCK_CANARY={self.token}\n")
        os.utime(self.path, (time.time() - 3600, time.time() - 60))
        self.before = os.stat(self.path)

    def untouched(self) -> bool:
        after = os.stat(self.path)
        return ((after.st_atime_ns, after.st_mtime_ns, after.st_ctime_ns)
                == (self.before.st_atime_ns, self.before.st_mtime_ns, self.before.st_ctime_ns)
                and sorted(os.listdir(self.folder)) == ["secret"])


@pytest.fixture
def host_canary(tmp_path: Path) -> HostCanary:
    return HostCanary(tmp_path / f"a39-{uuid.uuid4().hex[:6]}")


def stored_bytes(settings: Settings, job_id: str) -> bytes:
    """Everything Airlock keeps of a job: its row, its manifest, every frame inflated."""
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT row_to_json(j)::text FROM jobs j WHERE id = :id"),
                               {"id": job_id}).scalar_one()
            manifest = conn.execute(sa.text(
                "SELECT coalesce(string_agg(row_to_json(f)::text, ''), '') FROM job_files f"
                " WHERE job_id = :id"), {"id": job_id}).scalar_one()
            frames = conn.execute(sa.text("SELECT raw_bytes, data FROM job_blobs WHERE job_id = :id"),
                                  {"id": job_id}).all()
    finally:
        engine.dispose()
    inflated = b"".join(blobs.inflate(data, raw) for raw, data in frames if data is not None)
    return row.encode() + manifest.encode() + inflated


def unharmed(worker: WorkerProcess, log_from: int) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
    assert "Traceback" not in worker.log()[log_from:], worker.log()[log_from:][-3000:]


def refusals(client: Airlock, record: JobRecord) -> dict[str, str]:
    return {r.path: r.reason or "" for r in client.files(record.id) if r.status == "refused"}


def collected(client: Airlock, record: JobRecord) -> dict[str, bytes]:
    return {r.path: b"".join(client.read_file(record.id, r)) for r in client.files(record.id)
            if r.status == "collected"}


PLANT = r"""
set -e
mkdir -p out/real
echo mine > out/real/ok.txt
ln -s "$CANARY/secret" out/secret                 # a link at a collected path, to a host file
ln -s "$CANARY" out/dir                           # a linked parent folder
ln -s ../../../../../../../../../../..$CANARY/secret out/up   # relative, out of the volume
ln -s /proc/1/environ out/environ1
ln -s /proc/self/environ out/environ
ln -s /etc/shadow out/shadow
ln -s / out/root
ln -s "$CANARY" linked
ln /etc/passwd out/hard-etc 2>/dev/null && echo "hard link to /etc/passwd made" || echo "hard link EXDEV"
ln out/real/ok.txt out/hard                       # a hard link to its own file
echo planted
"""


def test_a39_links_at_any_component_are_never_followed_and_nothing_of_the_host_is_read(
        attack: Attack, client: Airlock, settings: Settings, worker: WorkerProcess,
        host_canary: HostCanary, tmp_path: Path) -> None:
    log_from = len(worker.log())
    record = attack.job(PLANT, profile="shell", env={"CANARY": str(host_canary.folder)},
                        collect=["out/**", "out/dir/secret", "linked/secret", "linked/**",
                                 "out/root/etc/shadow"])

    assert record.verdict == "ok" and "planted" in record.stdout, record.summary() + record.stderr
    assert "hard link EXDEV" in record.stdout
    why = refusals(client, record)
    links = {"out/secret", "out/dir", "out/up", "out/environ1", "out/environ", "out/shadow",
             "out/root", "linked"}
    assert {p: why.get(p) for p in links} == dict.fromkeys(links, LINK), why
    assert collected(client, record) == {"out/real/ok.txt": b"mine\n", "out/hard": b"mine\n"}
    assert host_canary.untouched()
    stored = stored_bytes(settings, record.id)
    assert host_canary.token.encode() not in stored and b"AIRLOCK_DATABASE_URL" not in stored
    saved = client.save_files(record.id, tmp_path / "out")
    assert sorted(s.local for s in saved) == ["out/hard", "out/real/ok.txt"]
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))
    unharmed(worker, log_from)
    attack.record("A39", "links at collected paths and on the way to them: a host canary file "
                  "and its folder (absolute and ../../.. out of the volume), /proc/1/environ, "
                  "/proc/self/environ, /etc/shadow, /; hard links to /etc/passwd and to its own "
                  "file; collect out/**, out/dir/secret, linked/**",
                  "every link refused as a link, none opened (openat2 RESOLVE_BENEATH|NO_SYMLINKS); "
                  "the host canary keeps its atime and its token is nowhere in PostgreSQL; "
                  "hard link to /etc/passwd EXDEV; the job's own hard link collected", record,
                  refused=len(why), files_ms=(record.phases or {}).get("files_ms"))


FIFO_AND_SPARSE = r"""
import os
os.makedirs("out", exist_ok=True)
os.mkfifo("out/fifo")                               # no writer: a blocking open would hang
with open("out/huge", "wb") as f:
    f.truncate(1 << 40)                             # a sparse terabyte
with open("out/sparse-small", "wb") as f:
    f.truncate(3 << 20)
import socket
s = socket.socket(socket.AF_UNIX); s.bind("out/sock")
print("planted")
"""


def test_a39_a_fifo_a_socket_and_a_sparse_terabyte_neither_block_nor_fill_the_worker(
        attack: Attack, client: Airlock, worker: WorkerProcess) -> None:
    log_from = len(worker.log())
    t0 = time.monotonic()
    record = attack.job(FIFO_AND_SPARSE, collect=["out/*"], timeout_s=30)
    seconds = time.monotonic() - t0

    assert record.verdict == "ok", record.summary() + record.stderr
    why = refusals(client, record)
    assert why == {"out/fifo": "not a regular file: a FIFO",
                   "out/sock": "not a regular file: a socket",
                   "out/huge": f"{1 << 40} bytes, over the cap of {256 * MiB} for one file"}, why
    assert collected(client, record) == {"out/sparse-small": bytes(3 << 20)}  # apparent size
    files_ms = (record.phases or {}).get("files_ms")
    assert files_ms is not None and files_ms < 2000 and seconds < 30, (files_ms, seconds)
    unharmed(worker, log_from)
    attack.record("A39", "a FIFO with no writer, a unix socket and a 1 TiB sparse file at "
                  "collected paths (out/*), beside a 3 MiB sparse one",
                  "FIFO and socket refused unopened (never blocking); the terabyte refused by "
                  "its apparent size, never read; the small sparse file collected at its "
                  "apparent size", record, files_ms=files_ms)


FLOOD = r"""
import os
os.makedirs("out/many", exist_ok=True)
for i in range(100_000):
    os.close(os.open(f"out/many/{i:06d}", os.O_WRONLY | os.O_CREAT, 0o644))
print("made", len(os.listdir("out/many")))
"""


def test_a39_a_hundred_thousand_tiny_files_are_capped_counted_and_bounded(
        attack: Attack, client: Airlock, settings: Settings, worker: WorkerProcess) -> None:
    log_from, rss = len(worker.log()), tree_rss(worker.pid)
    record = attack.job(FLOOD, collect=["out/many/*"], timeout_s=120)
    growth = tree_rss(worker.pid) - rss

    assert record.verdict == "ok" and "made 100000" in record.stdout, record.summary()
    cap = settings.collect.files
    assert record.files == {"collected": cap, "bytes": 0, "refused": 100_000 - cap,
                            "refusals_not_listed": 100_000 - cap - settings.collect.refusals_listed}
    rows = client.files(record.id)
    assert len(rows) == cap + settings.collect.refusals_listed
    assert [r.path for r in rows[:3]] == ["out/many/000000", "out/many/000001", "out/many/000002"]
    assert {r.reason for r in rows if r.status == "refused"} == {f"over the cap of {cap} files"}
    files_ms = (record.phases or {}).get("files_ms")
    assert growth < 50 * MiB, growth
    unharmed(worker, log_from)
    attack.record("A39", "100,000 empty files in out/many, collected by out/many/*",
                  f"the first {cap} (the count cap) collected; the other {100_000 - cap} refused, "
                  f"{settings.collect.refusals_listed} listed with their reason and the rest "
                  "counted; the worker's memory bounded", record, files_ms=files_ms,
                  worker_rss_growth_mib=round(growth / MiB, 1))


ODD_NAMES = r"""
import os
os.makedirs(b"out", exist_ok=True)
for name in (b"new\nline.txt", b"bad\xff\xfename.bin", b"\x1b]52;c;SGVsbG8=\x07clip", b"ok.txt"):
    with open(b"out/" + name, "wb") as f:
        f.write(name)
print("planted")
"""


def test_a39_names_with_a_newline_escape_sequences_or_invalid_utf8_stay_bytes_and_show_escaped(
        attack: Attack, client: Airlock, settings: Settings, tmp_path: Path) -> None:
    record = attack.job(ODD_NAMES, collect=["out/*"])

    assert record.verdict == "ok", record.summary() + record.stderr
    got = collected(client, record)
    assert got == {"out/new\\x0aline.txt": b"new\nline.txt", "out/bad\\xff\\xfename.bin":
                   b"bad\xff\xfename.bin", "out/\\x1b]52;c;SGVsbG8=\\x07clip":
                   b"\x1b]52;c;SGVsbG8=\x07clip", "out/ok.txt": b"ok.txt"}
    listed = subprocess.run([sys.executable, "-m", "airlock.cli", "files", record.id], cwd=ROOT,
                            env=worker_env(settings), capture_output=True, timeout=60)
    assert listed.returncode == 0 and b"\x1b" not in listed.stdout and b"\xff" not in listed.stdout
    assert all(line.isascii() and line.decode().isprintable()
               for line in listed.stdout.splitlines()), listed.stdout
    saved = client.save_files(record.id, tmp_path / "dl")
    assert not [s for s in saved if s.problem]
    assert sorted(os.listdir(tmp_path / "dl" / "out")) == sorted(
        ["new\\x0aline.txt", "bad\\xff\\xfename.bin", "\\x1b]52;c;SGVsbG8=\\x07clip", "ok.txt"])
    attack.record("A39", "file names with a newline, bytes that are not UTF-8, an OSC 52 "
                  "clipboard sequence", "collected byte for byte; each name kept as reversible "
                  "printable text (\\x0a, \\xff, \\x1b); airlock files prints printable ASCII; a "
                  "download names each file with its escaped, printable name", record)


REWRITE = r"""
import os, sys, time
os.makedirs("out", exist_ok=True)
if os.fork() == 0:                              # a writer that outlives the job's main process
    os.setsid()
    if os.fork() == 0:
        i = 0
        while True:                             # each version whole, then renamed into place
            i += 1
            data = bytes([65 + i % 26]) * ((1 + i % 4) << 20)
            with open("out/.log.tmp", "wb") as f:
                f.write(data)
            os.rename("out/.log.tmp", "out/log")
            with open("out/inplace", "r+b" if i > 1 else "wb") as f:   # and one in place
                f.write(data)
    os._exit(0)
time.sleep(1.5)
print("main exits while the writer writes")
"""


def test_a39_a_file_rewritten_while_the_job_ends_is_taken_whole(
        attack: Attack, client: Airlock, worker: WorkerProcess) -> None:
    log_from = len(worker.log())
    record = attack.job(REWRITE, collect=["out/*"])

    assert record.verdict == "ok", record.summary() + record.stderr
    got = collected(client, record)
    log = got["out/log"]
    # one version, whole: its size says which, and every byte is that version's letter
    assert len(log) in (1 * MiB, 2 * MiB, 3 * MiB, 4 * MiB) and len(set(log)) == 1, len(log)
    rows = {r.path: r for r in client.files(record.id)}
    assert rows["out/inplace"].status == "collected"  # as the writer's kill left it
    assert not [r for r in rows.values() if r.reason == "changed while it was read"]
    unharmed(worker, log_from)
    attack.record("A39", "a detached writer (setsid, double fork) rewriting collected files "
                  "while the job's main process exits", "the launcher kills every process of "
                  "the job before the worker reads: each file is taken whole as the job left it "
                  "(the renamed one is one complete version); a file that changes while read "
                  "is refused (unit test: grown, truncated, rewritten at the same size)", record)


OUT_OF_THE_WORKSPACE = ["../etc/passwd", "out/../../..", "/etc/shadow", "/proc/1/environ"]


def test_a39_a_glob_out_of_the_workspace_is_refused_at_submit(
        attack: Attack, client: Airlock, settings: Settings) -> None:
    before = job_count(settings.database_url)
    for pattern in OUT_OF_THE_WORKSPACE:
        with pytest.raises(JobSpecError) as refused:
            client.submit(code="print(1)", collect=["out/**", pattern])
        assert refused.value.field == "collect[1]", str(refused.value)
    assert job_count(settings.database_url) == before
    attack.record("A39", "collect " + ", ".join(OUT_OF_THE_WORKSPACE), "each refused at submit "
                  "with a JobSpecError naming collect[1]; nothing stored or queued", None,
                  verdict="refused")
