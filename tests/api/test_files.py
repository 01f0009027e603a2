"""Files in and out over HTTP (issue 17): a job sent with curl as multipart/form-data (a
binary file and a tar archive) reads them and collects files; its caller lists them and
downloads them with curl (checksums, ranges, 304, 416), Node's fetch, the Python client and
the CLI; another tenant sees none of it; an oversized upload stores nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from airlock.client import Airlock
from config.settings import Settings
from tests.api.conftest import read_stalled
from tests.api.test_bad_input import jobs_of
from tests.conftest import check_reads
from tests.services import ApiProcess, WorkerProcess, free_port, tree_rss

pytestmark = pytest.mark.integration
CLIENTS = Path(__file__).parent / "clients"
MiB = 1024**2
INPUT = bytes(range(256)) * 64 + b"\x00\r\n\xff"
HELLO = b"hello from the archive\n"
BIG = bytes((i * 7) % 251 for i in range(3 * MiB + 5))  # four 1 MiB frames, the last 5 bytes
JOB = r"""
import hashlib, os
data = open("in/data.bin", "rb").read()
tool = open("tools/hello.txt").read()
os.makedirs("out", exist_ok=True)
open("out/copy.bin", "wb").write(data[::-1])
open("out/big.bin", "wb").write(bytes((i * 7) % 251 for i in range(3 * 2**20 + 5)))
open("out/new\nline.txt", "w").write(tool)
print(hashlib.sha256(data).hexdigest(), tool.strip())
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def curl(url: str, key: str, *args: str, tmp: Path) -> Answer:
    """One request with curl: its status, headers (lower-cased names) and body."""
    head, body = tmp / "curl-headers", tmp / "curl-body"
    body.unlink(missing_ok=True)  # curl writes no file for an empty body
    done = subprocess.run(["curl", "-s", "-D", str(head), "-o", str(body), "-H",
                           f"Authorization: Bearer {key}", *args, url],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    blocks = head.read_bytes().decode("latin-1").strip().split("\r\n\r\n")
    lines = blocks[-1].split("\r\n")  # after any "100 Continue"
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()},
                  body.read_bytes() if body.exists() else b"")


def tools_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("tools/hello.txt")
        info.size = len(HELLO)
        tar.addfile(info, io.BytesIO(HELLO))
    return buf.getvalue()


@dataclass
class Sent:
    job_id: str
    script: list[str]  # what files.sh printed


@pytest.fixture(scope="module")
def sent(api: ApiProcess, keys: dict[str, str], worker: WorkerProcess,
         tmp_path_factory: pytest.TempPathFactory) -> Sent:
    """A job sent by tests/api/clients/files.sh (curl -F), finished with its files collected."""
    folder = tmp_path_factory.mktemp("files-sh")
    (folder / "job.json").write_text(json.dumps({"code": JOB, "collect": ["out/**"]}))
    (folder / "input.bin").write_bytes(INPUT)
    (folder / "tools.tar.gz").write_bytes(tools_tar())
    done = subprocess.run(["bash", str(CLIENTS / "files.sh"), api.url, keys["tenant-a:submit"],
                           str(folder)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    return Sent(lines[0].removeprefix("submitted "), lines)


def test_a_job_sent_with_curl_reads_its_files_and_its_files_come_back(
        sent: Sent, api: ApiProcess, keys: dict[str, str], tmp_path: Path) -> None:
    assert sent.script[-1] == "copy.bin matches its ETag"
    assert sorted(sent.script[1:-1]) == sorted([
        f"collected {len(BIG)} {hashlib.sha256(BIG).hexdigest()[:12]} out/big.bin",
        f"collected {len(INPUT)} {hashlib.sha256(INPUT[::-1]).hexdigest()[:12]} out/copy.bin",
        f"collected 23 {hashlib.sha256(HELLO).hexdigest()[:12]} out/new\\x0aline.txt"])
    record = curl(f"{api.url}/v1/jobs/{sent.job_id}", keys["tenant-a:read"], tmp=tmp_path)
    job = json.loads(record.body)
    assert job["verdict"] == "ok", job
    assert job["stdout"] == f"{hashlib.sha256(INPUT).hexdigest()} hello from the archive\n"
    assert job["files"]["collected"] == 3


def test_a_download_says_its_length_and_checksum_and_serves_ranges(
        sent: Sent, api: ApiProcess, keys: dict[str, str], tmp_path: Path) -> None:
    url, key = f"{api.url}/v1/jobs/{sent.job_id}/files/out/big.bin", keys["tenant-a:read"]
    whole = curl(url, key, tmp=tmp_path)
    sha = hashlib.sha256(BIG)
    assert (whole.status, whole.body) == (200, BIG)
    assert whole.headers["content-length"] == str(len(BIG))
    assert whole.headers["etag"] == f'"{sha.hexdigest()}"'
    assert whole.headers["repr-digest"] == f"sha-256=:{base64.b64encode(sha.digest()).decode()}:"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "application/octet-stream"
    assert whole.headers["content-disposition"] == \
        "attachment; filename=\"big.bin\"; filename*=UTF-8''big.bin"
    n = len(BIG)
    ranges = {"bytes=0-9": (0, 10), f"bytes={MiB - 3}-{MiB + 2}": (MiB - 3, MiB + 3),
              f"bytes={3 * MiB}-": (3 * MiB, n), "bytes=-7": (n - 7, n),
              f"bytes={n - 1}-{n + 100}": (n - 1, n)}  # across frames, to the end, past it
    for asked, (start, end) in ranges.items():
        part = curl(url, key, "-H", f"Range: {asked}", tmp=tmp_path)
        assert (part.status, part.body) == (206, BIG[start:end]), asked
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(BIG)}"
        assert part.headers["content-length"] == str(end - start)
        assert part.headers["etag"] == whole.headers["etag"]  # of the whole file
    past = curl(url, key, "-H", f"Range: bytes={len(BIG)}-", tmp=tmp_path)
    assert past.status == 416 and past.headers["content-range"] == f"bytes */{len(BIG)}"
    assert json.loads(past.body)["status"] == 416
    several = curl(url, key, "-H", "Range: bytes=0-1,5-6", tmp=tmp_path)
    assert (several.status, len(several.body)) == (200, len(BIG))  # several ranges: whole
    cached = curl(url, key, "-H", f"If-None-Match: {whole.headers['etag']}", tmp=tmp_path)
    assert (cached.status, cached.body, cached.headers["etag"]) == (304, b"", whole.headers["etag"])
    stale = curl(url, key, "-H", "Range: bytes=0-0", "-H", 'If-Range: "stale"', tmp=tmp_path)
    assert (stale.status, len(stale.body)) == (200, len(BIG))
    head = curl(url, key, "-I", tmp=tmp_path)  # HEAD: the same headers, no body
    assert head.status == 200 and len(head.body) < 4096  # -I writes the headers there too
    for name in ("content-length", "etag", "repr-digest", "content-disposition"):
        assert head.headers[name] == whole.headers[name], name
    head_part = curl(url, key, "-I", "-H", "Range: bytes=-7", tmp=tmp_path)
    assert head_part.status == 206 and head_part.headers["content-length"] == "7"


def test_a_name_with_a_newline_is_escaped_text_never_raw_in_a_header(
        sent: Sent, api: ApiProcess, keys: dict[str, str], tmp_path: Path) -> None:
    got = curl(f"{api.url}/v1/jobs/{sent.job_id}/files/out/new%5Cx0aline.txt",
               keys["tenant-a:read"], tmp=tmp_path)
    assert (got.status, got.body) == (200, HELLO)
    assert got.headers["content-disposition"] == \
        "attachment; filename=\"new_x0aline.txt\"; filename*=UTF-8''new%5Cx0aline.txt"


def test_another_tenant_and_an_unknown_file_are_404(sent: Sent, api: ApiProcess,
                                                    keys: dict[str, str], tmp_path: Path) -> None:
    base = f"{api.url}/v1/jobs/{sent.job_id}/files"
    for path in ("", "/out/big.bin"):
        other = curl(base + path, keys["tenant-b:read"], tmp=tmp_path)
        assert other.status == 404 and json.loads(other.body)["title"] == "Not found"
        assert sent.job_id in json.loads(other.body)["detail"]
    missing = curl(base + "/out/nothing.bin", keys["tenant-a:read"], tmp=tmp_path)
    assert missing.status == 404 and "kept no file" in json.loads(missing.body)["detail"]
    assert curl(base, keys["tenant-a:admin"], tmp=tmp_path).status == 200
    assert curl(base, "al_nope", tmp=tmp_path).status == 401


def test_node_fetch_downloads_a_file_and_checks_it(sent: Sent, api: ApiProcess,
                                                   keys: dict[str, str]) -> None:
    done = subprocess.run(["node", str(CLIENTS / "download.mjs"), api.url, keys["tenant-a:read"],
                           sent.job_id, "out/big.bin"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"out/big.bin {len(BIG)} bytes, sha256 matches its ETag"]


def test_the_python_client_over_http_reads_files_as_the_direct_one(
        sent: Sent, api: ApiProcess, keys: dict[str, str], api_settings: Settings,
        tmp_path: Path) -> None:
    direct = Airlock(api_settings)
    client = Airlock(url=api.url, api_key=keys["tenant-a:read"])
    try:
        assert client.files(sent.job_id) == direct.files(sent.job_id)
        check_reads(client, sent.job_id, "out/big.bin", BIG)  # as tests/integration/test_files.py
        saved = client.save_files(sent.job_id, tmp_path / "py")
        assert not [s for s in saved if s.problem]
        assert (tmp_path / "py/out/big.bin").read_bytes() == BIG
        assert (tmp_path / "py/out/copy.bin").read_bytes() == INPUT[::-1]
    finally:
        client.close()
        direct.close()


def test_airlock_files_over_http(sent: Sent, api: ApiProcess, keys: dict[str, str],
                                 tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # no database, no Redis: HTTP only
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")} | {
        "AIRLOCK_API_URL": api.url, "AIRLOCK_API_KEY": keys["tenant-a:read"],
        "AIRLOCK_DATABASE_URL": f"postgresql+psycopg://x@{dead}/x",
        "AIRLOCK_REDIS_URL": f"redis://{dead}/0", "AIRLOCK_BROKER_URL": f"redis://{dead}/0"}
    listed = subprocess.run([sys.executable, "-m", "airlock.cli", "files", sent.job_id],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "out/big.bin" in listed.stdout and "out/new\\x0aline.txt" in listed.stdout
    got = subprocess.run([sys.executable, "-m", "airlock.cli", "files", sent.job_id, "--out",
                          str(tmp_path / "cli")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "cli/out/big.bin").read_bytes() == BIG
    assert (tmp_path / "cli/out/new\\x0aline.txt").read_bytes() == HELLO


def test_multipart_with_an_idempotency_key_makes_one_job(api: ApiProcess, keys: dict[str, str],
                                                         worker: WorkerProcess,
                                                         tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"\x01\x02")
    args = ["-F", 'spec={"code": "print(open(\'x.bin\', \'rb\').read())"};type=application/json',
            "-F", f"x.bin=@{tmp_path / 'in.bin'}", "-H", "Idempotency-Key: mp-1"]
    url, key = f"{api.url}/v1/jobs?wait=30", keys["tenant-b:submit"]
    first = curl(url, key, *args, tmp=tmp_path)
    assert first.status == 201, first.body
    again = curl(url, key, *args, tmp=tmp_path)
    assert again.status == 200 and json.loads(again.body)["id"] == json.loads(first.body)["id"]
    assert json.loads(again.body)["stdout"] == "b'\\x01\\x02'\n"
    (tmp_path / "in.bin").write_bytes(b"\x03")
    assert curl(url, key, *args, tmp=tmp_path).status == 409  # the same key, another file


@pytest.mark.parametrize(("size", "status", "named"), [
    (5 * MiB, 422, "files_b64.data/big.bin"),  # over the cap on one file (4 MiB)
    (33 * MiB, 413, None),  # over the body's cap (32 MiB)
])
def test_an_oversized_upload_is_refused_naming_the_file_and_stores_nothing(
        api: ApiProcess, keys: dict[str, str], api_settings: Settings, tmp_path: Path,
        size: int, status: int, named: str | None) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(size))
    before = jobs_of(api_settings, "tenant-b")
    refused = curl(f"{api.url}/v1/jobs", keys["tenant-b:submit"],
                   "-F", 'spec={"code": "print(1)"};type=application/json',
                   "-F", f"data/big.bin=@{tmp_path / 'big.bin'}", tmp=tmp_path)
    assert refused.status == status, refused.body
    problem = json.loads(refused.body)
    assert problem.get("field") == named
    if named:
        assert named in problem["detail"] and "one file" in problem["detail"]
    assert jobs_of(api_settings, "tenant-b") == before


@pytest.mark.parametrize(("args", "status", "field"), [
    (["-F", "x.bin=@/etc/hostname"], 422, "spec"),  # no spec part
    (["-F", "spec={nope;type=application/json"], 400, "spec"),
    (["-F", 'spec={"code": "1"};type=application/json', "-F", "../up=@/etc/hostname"], 422,
     "files_b64.../up"),
    (["-H", "Content-Type: multipart/form-data", "--data-binary", "x"], 400, None),
])
def test_bad_multipart_is_a_clear_problem(api: ApiProcess, keys: dict[str, str],
                                          api_settings: Settings, tmp_path: Path,
                                          args: list[str], status: int, field: str | None) -> None:
    before = jobs_of(api_settings, "tenant-b")
    refused = curl(f"{api.url}/v1/jobs", keys["tenant-b:submit"], *args, tmp=tmp_path)
    assert refused.status == status, refused.body
    assert refused.headers["content-type"] == "application/problem+json"
    assert json.loads(refused.body).get("field") == field
    assert jobs_of(api_settings, "tenant-b") == before


def test_a_large_file_streams_in_bounded_memory_and_a_stalled_reader_is_dropped(
        api_settings: Settings, artifacts: Path, keys: dict[str, str],
        worker: WorkerProcess) -> None:
    """48 MiB downloaded whole: the API grows by far less than the file (a frame at a time).
    A reader that stops reading is dropped after AIRLOCK_API_SEND_TIMEOUT_S, and said so."""
    proc = ApiProcess(api_settings, artifacts / "api-large-file.log",
                      AIRLOCK_API_SEND_TIMEOUT_S="2").start()
    auth = {"Authorization": f"Bearer {keys['tenant-a:submit']}"}
    try:
        with httpx.Client(base_url=proc.url, headers=auth, timeout=120) as c:
            job = c.post("/v1/jobs", params={"wait": 60}, json={
                "code": "import os\nopen('large.bin', 'wb').write(os.urandom(48 * 2**20))",
                "collect": ["large.bin"]}).json()
            assert job["verdict"] == "ok" and job["files"]["collected"] == 1, job
            url = f"/v1/jobs/{job['id']}/files/large.bin"
            sha = c.get(f"/v1/jobs/{job['id']}/files").json()["files"][0]["sha256"]
            assert proc.proc is not None
            pid = proc.proc.pid
            before, peak, digest, size = tree_rss(pid), 0, hashlib.sha256(), 0
            with c.stream("GET", url) as answer:
                for chunk in answer.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    peak = max(peak, tree_rss(pid))
            assert (size, digest.hexdigest()) == (48 * MiB, sha)
            assert peak - before < 24 * MiB, (before, peak)  # measured: 9 MiB
        received = read_stalled(proc, url, keys["tenant-a:submit"], stall_s=6)
        assert received < 24 * MiB  # of 48: what the sockets buffered
        assert "api.reader_dropped" in proc.log()
    finally:
        proc.stop()
