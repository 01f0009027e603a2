"""Bad input through HTTP: each a clear problem, none a 5xx, nothing half-written."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from config.settings import Settings
from tests.api.conftest import http
from tests.services import ApiProcess

pytestmark = pytest.mark.integration


def jobs_of(s: Settings, tenant: str) -> int:
    db = sa.create_engine(s.database_url)
    try:
        with db.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM jobs WHERE tenant = :t"),
                                    {"t": tenant}).scalar_one())
    finally:
        db.dispose()


def test_a_body_over_the_cap_is_refused_before_it_is_read(api: ApiProcess, keys: dict[str, str],
                                                          api_settings: Settings) -> None:
    cap = api_settings.api.max_body_bytes
    key = keys["tenant-a:submit"]
    # Declared too long: refused on the headers, the body never sent.
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {cap + 1}\r\n\r\n"
                     .encode())
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    # Streamed without a length: refused once it passes the cap.
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"code": "'
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536
    with http(api, key) as c:
        answer = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["title"] == "Request body too large"


@pytest.mark.parametrize(("body", "kind", "status"), [
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # too deep
    (b"{\"code\": " + b"9" * 5000 + b"}", "application/json", 400),  # a number too long
    (b"{not json", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),  # not UTF-8
    (b'{"code": "print(1)"}', "text/plain", 415),
    (b'{"code": "print(1)"}', "", 415),
    (b'"a string"', "application/json", 422),
    (b'{"code": "print(1)", "limits": {"cpus": "2"}}', "application/json", 422),
    (b'{"code": "print(1)", "image": "ubuntu"}', "application/json", 422),
])
def test_bad_bodies_are_clear_problems(api: ApiProcess, keys: dict[str, str], body: bytes,
                                       kind: str, status: int, api_settings: Settings) -> None:
    before = jobs_of(api_settings, "tenant-a")
    with http(api, keys["tenant-a:submit"]) as c:
        answer = c.post("/v1/jobs", content=body, headers={"Content-Type": kind} if kind else {})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status and problem["detail"]
    if status == 422:
        assert problem.get("field")
    assert jobs_of(api_settings, "tenant-a") == before


@pytest.mark.parametrize("last_event_id", ["nonsense", "1-2:x:0", "99999999999999999999999-0",
                                           "1-1:-5:0", "\u202e1-1:0:0"])
def test_a_forged_last_event_id_is_400(api: ApiProcess, keys: dict[str, str],
                                       last_event_id: str) -> None:
    with http(api, keys["tenant-a:submit"]) as c:
        job = c.post("/v1/jobs?wait=30", json={"code": "print(1)"}).json()
        answer = c.get(f"/v1/jobs/{job['id']}/events",
                       headers={"Last-Event-ID": last_event_id.encode("utf-8")})
    assert answer.status_code == 400, answer.text


def test_a_thousand_retries_of_one_submission_make_one_job(api: ApiProcess, keys: dict[str, str],
                                                           api_settings: Settings) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    before = jobs_of(api_settings, "tenant-b")

    def submit(_: int) -> tuple[int, str]:
        with http(api, keys["tenant-b:submit"]) as c:
            answer = c.post("/v1/jobs", json={"code": "print('once')"}, headers=headers)
        return answer.status_code, answer.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(submit, range(1000)))
    assert {job for _, job in answers} == {answers[0][1]}
    assert sorted(code for code, _ in answers).count(201) == 1
    assert {code for code, _ in answers} == {200, 201}
    assert jobs_of(api_settings, "tenant-b") == before + 1
    with http(api, keys["tenant-b:submit"]) as c:  # the same key for another job: a conflict
        other = c.post("/v1/jobs", json={"code": "print('other')"}, headers=headers)
    assert other.status_code == 409
