"""Outputs kept whole in an S3-compatible bucket (AIRLOCK_S3_URL), against a local S3 server
(moto's, on loopback: never a real endpoint). PostgreSQL keeps the index (job_blobs rows with
no data, job_files); the objects hold the frames; visibility, ranges, the dropping of other
attempts' objects and retention behave as with PostgreSQL alone; the keys are never logged."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks import objects, retention
from tests.faults.rig import free_port
from tests.services import WorkerProcess

pytestmark = [pytest.mark.integration]
MiB = 1024**2
BUCKET = "airlock-test"
# botocore must never look for credentials on a metadata address (the test gives its own).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(scope="module")
def s3_settings(settings: Settings, artifacts: Path) -> Iterator[Settings]:
    port = free_port()
    log = open(artifacts / f"moto-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:8]
    s = settings.but(fleet=f"s3-{tag}", queue=f"airlock-s3-{tag}", s3_url=url, s3_bucket=BUCKET,
                     s3_prefix=f"t-{tag}/", s3_access_key="testing",
                     s3_secret_key=f"secret-{uuid.uuid4().hex}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        bucket(s).create_bucket(Bucket=BUCKET)
        yield s
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket(s: Settings) -> Any:
    return boto3.client("s3", endpoint_url=s.objects.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def s3_worker(s3_settings: Settings, artifacts: Path) -> Iterator[WorkerProcess]:
    o = s3_settings.objects
    assert o.access_key is not None and o.secret_key is not None
    proc = WorkerProcess(s3_settings, artifacts / f"worker-{s3_settings.fleet}.log",
                         AIRLOCK_S3_URL=o.url or "", AIRLOCK_S3_BUCKET=o.bucket,
                         AIRLOCK_S3_PREFIX=o.prefix, AIRLOCK_S3_ACCESS_KEY=o.access_key.get_secret_value(),
                         AIRLOCK_S3_SECRET_KEY=o.secret_key.get_secret_value(),
                         AWS_EC2_METADATA_DISABLED="true").start()
    yield proc
    proc.stop()


def keys(s: Settings, job_id: str) -> list[str]:
    found = bucket(s).list_objects_v2(Bucket=BUCKET, Prefix=objects.job_prefix(s.objects.prefix, job_id))
    return sorted(o["Key"] for o in found.get("Contents", []))


CODE = r"""
import os, sys
sys.stdout.buffer.write(bytes(range(256)) * (12 * 1024))    # 3 MiB: past the row's head
os.makedirs("out", exist_ok=True)
open("out/a.bin", "wb").write(bytes((i * 13) % 256 for i in range(3 * 2**20 + 1)))
open("out/b.txt", "w").write("bee\n")
"""
A_BIN = bytes((i * 13) % 256 for i in range(3 * MiB + 1))


def test_outputs_go_to_the_bucket_indexed_in_postgres_and_read_back_whole_and_in_ranges(
        s3_settings: Settings, s3_worker: WorkerProcess) -> None:
    s = s3_settings
    client = Airlock(s)
    try:
        record = client.submit(code=CODE, collect=["out/*"],
                               limits={"output_bytes": 8 * MiB}).wait(120)
        assert record.verdict == "ok", record.summary()
        with client.store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT blob, seq, data IS NULL FROM job_blobs"
                                        " WHERE job_id = :j ORDER BY blob, seq"),
                                {"j": record.id}).all()
        assert {(b, n) for b, _, n in rows} == {("stdout", True), ("file:0", True), ("file:1", True)}
        assert keys(s, record.id) == sorted(objects.key(s.objects.prefix, record.id, 1, b, q)
                                            for b, q, _ in rows)
        assert b"".join(client.output(record.id, "stdout")) == bytes(range(256)) * (12 * 1024)
        assert b"".join(client.download(record.id, "out/a.bin")) == A_BIN
        assert b"".join(client.download(record.id, "out/a.bin", MiB - 1, 2 * MiB + 1)) == \
            A_BIN[MiB - 1:2 * MiB + 1]
        row = client.file(record.id, "out/a.bin")
        assert row.sha256 == hashlib.sha256(A_BIN).hexdigest()

        # A dead attempt's object (its row never written) goes once the result is the job's;
        # the result's own objects stay.
        stray = objects.key(s.objects.prefix, record.id, 7, "file:0", 0)
        bucket(s).put_object(Bucket=BUCKET, Key=stray, Body=b"x")
        client.outputs.drop_other_attempts(record.id, 1)
        assert stray not in keys(s, record.id) and len(keys(s, record.id)) == len(rows)

        # Retention: the objects first, then the rows.
        with client.store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE jobs SET finished_at = now() - interval '40 days'"
                                 " WHERE id = :j"), {"j": record.id})
        purged = retention.purge_jobs(client.store, timedelta(days=30), client.outputs)
        assert purged >= 1 and keys(s, record.id) == []
        with client.store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM job_blobs WHERE job_id = :j"),
                                {"j": record.id}).scalar_one()
        assert left == 0
        secret = s.objects.secret_key.get_secret_value() if s.objects.secret_key else "?"
        assert secret not in s3_worker.log()
    finally:
        client.close()


def test_an_unreachable_bucket_is_an_infrastructure_error_naming_no_secret(
        s3_settings: Settings) -> None:
    from base.errors import ObjectStoreUnavailable

    s = s3_settings.but(s3_url=f"http://127.0.0.1:{free_port()}")
    store = objects.S3Objects(s.objects)
    with pytest.raises(ObjectStoreUnavailable) as info:
        store.put("k", b"x")
    assert str(info.value) == "object store: put failed (EndpointConnectionError)"
