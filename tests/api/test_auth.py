"""Keys: none, bad, revoked, expired, the wrong scope; and tenants kept apart: another tenant's
job answers 404 exactly as an unknown id, everywhere, and a listing never shows it."""

from __future__ import annotations

import time

import pytest

from config.settings import Settings
from tasks.keys import Scope
from tasks.tenancy import TenantStore
from tests.api.conftest import http
from tests.services import ApiProcess, WorkerProcess

pytestmark = pytest.mark.integration
JOB = {"code": "print('mine')"}
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("key", [None, "not-a-key", "al_000000000000_" + "x" * 43, "revoked",
                                 "expired", "Basic dXNlcjpwYXNz"])
def test_no_valid_key_is_401_with_the_same_answer(api: ApiProcess, keys: dict[str, str],
                                                  key: str | None) -> None:
    if key == "expired":
        time.sleep(1.1)  # its expiry was one second after the session made it
    token = keys.get(key, key) if key else None
    with http(api, token) as c:
        if key == "Basic dXNlcjpwYXNz":
            c.headers["Authorization"] = key
        answer = c.post("/v1/jobs", json=JOB)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "al_" not in answer.text  # a key is never echoed


def test_a_read_key_reads_but_does_not_submit_or_cancel(api: ApiProcess, keys: dict[str, str],
                                                        worker: WorkerProcess) -> None:
    with http(api, keys["tenant-a:submit"]) as submitter, http(api, keys["tenant-a:read"]) as reader:
        job = submitter.post("/v1/jobs?wait=30", json=JOB).json()
        assert reader.get(f"/v1/jobs/{job['id']}").status_code == 200
        refused = reader.post("/v1/jobs", json=JOB)
        assert refused.status_code == 403 and "scope is read" in refused.json()["detail"]
        assert reader.post(f"/v1/jobs/{job['id']}/cancel").status_code == 403


def test_another_tenants_job_is_404_like_an_unknown_id_everywhere(
        api: ApiProcess, keys: dict[str, str], worker: WorkerProcess) -> None:
    with http(api, keys["tenant-a:submit"]) as a, http(api, keys["tenant-b:submit"]) as b:
        job = a.post("/v1/jobs?wait=30", json=JOB).json()
        assert job["verdict"] == "ok"
        for path in ("", "/events", "/stdout", "/stderr"):
            theirs = b.get(f"/v1/jobs/{job['id']}{path}")
            unknown = b.get(f"/v1/jobs/{UNKNOWN}{path}")
            assert theirs.status_code == unknown.status_code == 404, path
            assert theirs.json()["title"] == unknown.json()["title"]
        assert b.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
        listed = b.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
        assert all(j["tenant"] == "tenant-b" for j in listed)
        assert job["id"] not in {j["id"] for j in listed}
    with http(api, keys["tenant-b:admin"]) as admin:  # an admin key sees every tenant's
        assert admin.get(f"/v1/jobs/{job['id']}").json()["tenant"] == "tenant-a"


def test_a_tenants_idempotency_key_is_its_own(api: ApiProcess, keys: dict[str, str]) -> None:
    headers = {"Idempotency-Key": "shared-by-chance"}
    with http(api, keys["tenant-a:submit"]) as a, http(api, keys["tenant-b:submit"]) as b:
        first_a = a.post("/v1/jobs", json=JOB, headers=headers)
        first_b = b.post("/v1/jobs", json=JOB, headers=headers)
    assert first_a.status_code == first_b.status_code == 201
    assert first_a.json()["id"] != first_b.json()["id"]


def test_a_revoked_key_is_refused_within_the_key_cache_time(api: ApiProcess,
                                                            api_settings: Settings,
                                                            tenants: TenantStore) -> None:
    assert api_settings.api.key_secret is not None
    made = tenants.create_key("tenant-b", Scope.READ,
                              api_settings.api.key_secret.get_secret_value().encode())
    with http(api, made.token) as c:
        assert c.get("/v1/jobs").status_code == 200  # proved, and its row now cached
        tenants.revoke_key(made.key_id)
        deadline = time.monotonic() + api_settings.api.key_cache_s + 2
        while (code := c.get("/v1/jobs").status_code) == 200:
            assert time.monotonic() < deadline, "still accepted past the cache time"
            time.sleep(0.25)
    assert code == 401
    assert made.token not in api.log() and made.token[16:] not in api.log()
