"""The client library over the HTTP API: ``Airlock(url=..., api_key=...)``, with the methods and
records of the direct client (airlock/client.py), for code outside the fleet. Live output is
Server-Sent Events, resumed from its last event's id after a dropped connection."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import fields
from typing import Any
from urllib.parse import quote

import httpx

from airlock.client import Airlock, JobHandle, WaitTimeout
from airlock.records import JobRecord
from base.errors import (
    AirlockError,
    BrokerUnavailable,
    DatabaseUnavailable,
    JobNotFound,
    JobSpecError,
    NoSuchFile,
    QuotaExceeded,
)
from config.settings import Settings, load_settings
from tasks import streams
from tasks.contract import JobSpec, parse_spec
from tasks.output_rows import FileRow
from tasks.streams import Event

WAIT_STEP_S = 30.0  # one long poll's wait; a longer wait is several
RETRIES = 5


def error_of(response: httpx.Response) -> AirlockError:
    """The API's problem as Airlock's error: the same tree as the direct client's."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = str(problem.get("detail") or response.reason_phrase)
    status = response.status_code
    if status == 422 and problem.get("field"):
        return JobSpecError(str(problem["field"]), detail.removeprefix(f"{problem['field']}: "))
    if status == 404:
        missing = NoSuchFile if str(problem.get("type", "")).endswith("/no-such-file") else JobNotFound
        return missing(detail)
    if status == 429:
        after = response.headers.get("retry-after")
        return QuotaExceeded(detail, float(after) if after and after.isdigit() else None)
    if status == 503:
        return DatabaseUnavailable(detail)
    return AirlockError(f"{status} {problem.get('title') or response.reason_phrase}: {detail}")


class HttpAirlock(Airlock):
    def __init__(self, settings: Settings | None = None, *, tenant: str | None = None,
                 url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 30.0, **_: Any) -> None:  # no super().__init__: nothing direct
        if url is None or not api_key:
            raise AirlockError("the HTTP client needs the API's url and a key")
        self.settings = settings or load_settings()
        self.tenant = tenant or ""  # the key's (the API says; a key has one tenant)
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}"})

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(RETRIES):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise BrokerUnavailable(f"the API at {self.http.base_url}: {exc}") from exc
                time.sleep(0.2 * 2 ** attempt)
                continue
            if response.status_code == 503 and attempt < RETRIES - 1:
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            if response.status_code >= 400:
                raise error_of(response)
            return response
        raise AssertionError("unreachable")

    def submit(self, job: JobSpec | dict[str, Any] | None = None, **fields: Any) -> JobHandle:
        spec = parse_spec(job if job is not None else fields)  # the contract's own checks, here too
        done = self._call("POST", "/v1/jobs", json=spec.model_dump(mode="json", exclude_none=True)).json()
        return JobHandle(done["id"], done["created"], self, time.monotonic())

    def result(self, job_id: str) -> JobRecord:
        return JobRecord.from_json(self._call("GET", f"/v1/jobs/{job_id}").json())

    def wait(self, job_id: str, timeout: float | None = None, *,
             just_queued: bool = False) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_STEP_S if deadline is None else min(WAIT_STEP_S, deadline - time.monotonic())
            record = JobRecord.from_json(self._call(
                "GET", f"/v1/jobs/{job_id}", params={"wait": max(0.0, left)},
                timeout=max(0.0, left) + 30).json())
            if record.done:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {record.status} after {timeout}s")

    def cancel(self, job_id: str) -> str:
        return str(self._call("POST", f"/v1/jobs/{job_id}/cancel").json()["state"])

    def resend(self, job_id: str) -> None:
        return None  # the API's fleet resends what Redis lost (its reconciler)

    def finished_among(self, job_ids: list[str], wait_s: float) -> list[str]:
        done = [j for j in job_ids if self.result(j).done]
        if not done:
            time.sleep(wait_s)
        return done

    def output(self, job_id: str, stream: str, start: int = 0) -> Iterator[bytes]:
        headers = {"Range": f"bytes={start}-"} if start else {}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/{stream}", headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            yield from response.iter_bytes()

    def files(self, job_id: str) -> list[FileRow]:
        manifest = self._call("GET", f"/v1/jobs/{job_id}/files").json()
        known = [f.name for f in fields(FileRow)]  # a newer server's other fields aside
        return [FileRow(**{k: entry.get(k) for k in known}) for entry in manifest["files"]]

    def read_file(self, job_id: str, row: FileRow, start: int = 0,
                  end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of a manifest entry, as the direct client reads them: one
        ranged GET (``file``, ``download`` and ``save_files`` come with the manifest)."""
        if start < 0 or (end is not None and end < start):
            raise AirlockError(f"bad range {start}-{end}")
        size = row.size or 0
        end = size if end is None else min(end, size)
        if start >= end:
            return
        ranged = (start, end) != (0, size)
        headers = {"Range": f"bytes={start}-{end - 1}"} if ranged else {}
        path = f"/v1/jobs/{job_id}/files/{quote(row.path, safe='/')}"
        with self.http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            if response.status_code != (206 if ranged else 200):
                raise AirlockError(f"{path}: the API answered {response.status_code}")
            yield from response.iter_bytes()

    def events(self, job_id: str, offset: str = streams.START, follow: bool = True,
               heartbeat_s: float | None = None) -> Iterator[Event]:
        """Events over SSE; a dropped connection resumes from the last event's id."""
        last = offset
        for attempt in range(RETRIES):
            try:
                for event in self._sse(job_id, last):
                    last = event.offset
                    yield event
                    if event.kind == "end":
                        return
                return
            except httpx.TransportError:
                time.sleep(0.2 * 2 ** attempt)
        raise BrokerUnavailable(f"the API at {self.http.base_url}: its event stream kept failing")

    def _sse(self, job_id: str, offset: str) -> Iterator[Event]:
        headers = {"Accept": "text/event-stream"}
        if offset != streams.START:
            headers["Last-Event-ID"] = offset
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    name, _, value = line.partition(":")
                    if name:  # a line starting with ":" is a comment (keepalive)
                        fields[name] = value.removeprefix(" ")
                    continue
                if "event" in fields:
                    yield _event(fields)
                fields = {}

    def close(self) -> None:
        self.http.close()


Airlock.over_http = HttpAirlock  # Airlock(url=..., api_key=...) is this class


def _event(fields: dict[str, str]) -> Event:
    kind, body = fields["event"], json.loads(fields.get("data") or "{}")
    if kind in ("stdout", "stderr"):
        data = base64.b64decode(body["b64"]) if "b64" in body else body.get("text", "").encode()
    else:
        data = json.dumps(body).encode()
    return Event(fields.get("id", ""), kind, data)
