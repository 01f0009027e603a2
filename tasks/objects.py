"""The optional object store (an S3-compatible bucket) for the frames of outputs kept whole.

PostgreSQL keeps the index either way (job_blobs rows, ``data`` NULL for a frame stored here),
so what is visible and when is decided there. An object's key says whose it is:
``<prefix><job id>/<attempt>/<blob>/<seq>``, so every object of a job, even one an attempt
stored before its worker died (its row never written), goes with the job's prefix. Errors are
``ObjectStoreUnavailable``, retried as a database outage is. The keys never appear in logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from base.errors import ObjectStoreUnavailable
from config.sections import Objects


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete_where(self, prefix: str, doomed: Callable[[str], bool]) -> int:
        """Delete the objects under ``prefix`` whose key ``doomed`` says; return how many."""


def key(prefix: str, job_id: str, attempt: int, blob: str, seq: int) -> str:
    return f"{prefix}{job_id}/{attempt}/{blob}/{seq}"


def job_prefix(prefix: str, job_id: str) -> str:
    return f"{prefix}{job_id}/"


def attempt_of(object_key: str, prefix: str) -> int | None:
    """The attempt a key of ``key`` names, or None for a key it did not make."""
    parts = object_key[len(prefix):].split("/")
    return int(parts[1]) if len(parts) >= 4 and parts[1].isdigit() else None


class S3Objects:
    """A bucket through boto3 (an optional dependency: ``pip install airlock[s3]``)."""

    def __init__(self, section: Objects) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ObjectStoreUnavailable("AIRLOCK_S3_URL is set but boto3 is not installed"
                                         " (pip install 'airlock[s3]')") from exc
        secret = section.secret_key.get_secret_value() if section.secret_key else None
        access = section.access_key.get_secret_value() if section.access_key else None
        self.bucket = section.bucket
        self.client: Any = boto3.client(
            "s3", endpoint_url=section.url, region_name=section.region,
            aws_access_key_id=access, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=30, s3={"addressing_style": "path"}))

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            # The message names the operation and the error code, never the key or secret.
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise ObjectStoreUnavailable(f"object store: {what} failed ({code})") from exc

    def put(self, key: str, data: bytes) -> None:
        self._call("put", lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data))

    def get(self, key: str) -> bytes:
        body = self._call("get", lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        return bytes(self._call("read", lambda: body["Body"].read()))

    def delete_where(self, prefix: str, doomed: Callable[[str], bool]) -> int:
        pages = self._call("list", lambda: list(self.client.get_paginator("list_objects_v2")
                                                .paginate(Bucket=self.bucket, Prefix=prefix)))
        keys = [o["Key"] for page in pages for o in page.get("Contents", []) if doomed(o["Key"])]
        for at in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[at:at + 1000]], "Quiet": True}
            self._call("delete", lambda b=batch: self.client.delete_objects(  # type: ignore[misc]
                Bucket=self.bucket, Delete=b))
        return len(keys)


def objects_for(section: Objects) -> ObjectStore | None:
    return S3Objects(section) if section.enabled else None
