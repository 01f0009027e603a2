"""Per-tenant egress with real jobs (docs/network.md, "Per-tenant egress"): two tenants, each
with a stand-in endpoint only the proxy resolves. A job reaches the common allowlist and its
own tenant's endpoints; another tenant's is a fast 403 naming the tenant and the domain. A
finished job's credential, and a guessed one, are refused; ``set-egress`` takes effect within
seconds without a proxy restart. The probe matrix goes to artifacts/tenant-egress.txt.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from airlock.client import Airlock, JobHandle
from airlock.records import JobRecord
from base.ids import parse_job_id
from config.settings import Settings
from tasks.store import make_engine
from tasks.tenancy import TenantStore
from tests.network import probes
from tests.network.conftest import PROXY_NAME, Endpoint
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.network, pytest.mark.integration]

MATRIX: dict[tuple[str, str], str] = {}  # (tenant, what was asked) -> outcome

# requests: [[label, proxy URL or null (the job's own), url], ...]; the outcome of each.
# An explicit proxy URL stands in for curl -x: urllib sends its credentials to the proxy.
REQUESTS = r'''
import json, os, time, urllib.error, urllib.request

def send(proxy, url):
    proxy = proxy or os.environ["HTTP_PROXY"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    start = time.monotonic()
    try:
        with opener.open(url, timeout=10) as r:
            return {"status": r.status, "body": r.read(300).decode(), "s": time.monotonic() - start}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(400).decode("utf-8", "replace"),
                "s": time.monotonic() - start}
    except OSError as exc:
        return {"status": None, "body": f"{type(exc).__name__}: {exc}", "s": time.monotonic() - start}

print(json.dumps({label: send(proxy, url) for label, proxy, url in ARGS["requests"]}))
'''

# A long job: one keep-alive connection to its tenant's endpoint, used throughout, and
# requests to ARGS["later"] (not yet its tenant's) every 0.25 s, for ARGS["seconds"].
LONG_RUNNING = r'''
import base64, http.client, json, os, time
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTP_PROXY"])
auth = "Basic " + base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()

def get(conn, host):
    conn.request("GET", f"http://{host}/", headers={"Proxy-Authorization": auth, "Host": host})
    response = conn.getresponse()
    response.read()
    return response.status, conn.sock.getsockname()[1]

own = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
seen, deadline = [], time.monotonic() + ARGS["seconds"]
print("started", flush=True)
while time.monotonic() < deadline:
    other = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
    own_status, own_port = get(own, ARGS["own"])
    later_status, _ = get(other, ARGS["later"])
    other.close()
    seen.append([time.time(), own_status, own_port, later_status])
    time.sleep(0.25)
print(json.dumps({"seen": seen}))
'''


@pytest.fixture(scope="module")
def tenants(egress_settings: Settings, egress_worker: WorkerProcess,
            tenant_endpoints: dict[str, Endpoint]) -> Iterator[dict[str, str]]:
    """Tenants A and B of this session, each with its stand-in endpoint as its own."""
    tag = uuid.uuid4().hex[:6]
    names = {"a": f"egress-a-{tag}", "b": f"egress-b-{tag}"}
    store = TenantStore(make_engine(egress_settings.database_url))
    for key, name in names.items():
        store.create(name)
        assert store.set_egress(name, [tenant_endpoints[key].host])
    yield names
    store.engine.dispose()


@pytest.fixture(scope="module")
def clients(egress_settings: Settings, tenants: dict[str, str]) -> Iterator[dict[str, Airlock]]:
    made = {key: Airlock(egress_settings, tenant=name) for key, name in tenants.items()}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module", autouse=True)
def matrix(artifacts: Path) -> Iterator[None]:
    yield
    lines = ["per-tenant egress probes (tenant x request -> outcome)"]
    lines += [f"  {tenant:<10} {asked:<58} {outcome}" for (tenant, asked), outcome in MATRIX.items()]
    (artifacts / "tenant-egress.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


def cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          env=worker_env(s) | {"AIRLOCK_LOG_FORMAT": "console"})


def test_set_egress_through_the_cli(egress_settings: Settings) -> None:
    name = f"egress-cli-{uuid.uuid4().hex[:6]}"
    assert cli(egress_settings, "tenant", "create", name).returncode == 0
    done = cli(egress_settings, "tenant", "set-egress", name, "Bedrock.EU.example", ".acme.example")
    assert done.returncode == 0, done.stderr
    assert "egress bedrock.eu.example, .acme.example" in done.stdout
    assert "egress_domains       bedrock.eu.example, .acme.example" in cli(
        egress_settings, "tenant", "show", name).stdout
    listed = [line for line in cli(egress_settings, "tenant", "list").stdout.splitlines()
              if line.startswith(name + "\t")]
    assert listed and listed[0].endswith("\tbedrock.eu.example,.acme.example")
    for bad, says in (("10.1.2.3", "an IP address"), ("*.acme.example", "wildcards")):
        refused = cli(egress_settings, "tenant", "set-egress", name, bad)
        assert refused.returncode != 0 and says in refused.stderr, refused.stderr
    assert cli(egress_settings, "tenant", "set-egress", name, "--clear").returncode == 0
    assert "none (the common allowlist only)" in cli(egress_settings, "tenant", "show", name).stdout
    assert cli(egress_settings, "tenant", "set-egress", "no-such-tenant", "a.example").returncode == 1


def run(client: Airlock, code: str, timeout_s: float = 60) -> JobRecord:
    record = client.submit({"code": code, "network": "egress",
                            "limits": {"timeout_s": timeout_s}}).wait(timeout_s + 60)
    assert record.verdict == "ok", record.summary()
    return record


def ask(client: Airlock, tenant: str, requests: list[list[Any]]) -> dict[str, Any]:
    record = run(client, probes.job_code(REQUESTS, requests=requests))
    got = probes.report(record.stdout)
    # What the proxy delivered to the job's own credential, from its access log: at least
    # the bodies of the replies to the requests made with it.
    egress = client.store.get(parse_job_id(record.id)).egress_bytes
    own = sum(len(got[label]["body"]) for label, proxy, _ in requests if proxy is None)
    assert egress is not None and egress >= own, (egress, own)
    MATRIX[(tenant, f"(job {record.id[:8]}: egress bytes counted)")] = f"{egress}"
    for label, outcome in got.items():
        body = " ".join(outcome["body"].splitlines()[-1:])[:150]
        MATRIX[(tenant, label)] = f"{outcome['status']} in {outcome['s'] * 1000:.0f} ms: {body}"
    return got


def test_each_tenant_reaches_its_own_endpoint_and_is_refused_the_others(
        clients: dict[str, Airlock], tenants: dict[str, str],
        tenant_endpoints: dict[str, Endpoint]) -> None:
    for me, other in (("a", "b"), ("b", "a")):
        mine, theirs = tenant_endpoints[me], tenant_endpoints[other]
        before = theirs.hits()
        got = ask(clients[me], me.upper(), [
            [f"{me}: own endpoint {mine.host}", None, mine.url],
            [f"{me}: {other}'s endpoint {theirs.host}", None, theirs.url],
            [f"{me}: {other}'s endpoint over https", None, f"https://{theirs.host}/"],
        ])
        own = got[f"{me}: own endpoint {mine.host}"]
        assert own["status"] == 200 and f"endpoint {mine.host}" in own["body"], own
        for label in (f"{me}: {other}'s endpoint {theirs.host}", f"{me}: {other}'s endpoint over https"):
            refused = got[label]
            assert refused["status"] == 403, refused
            assert f"{theirs.host} is not on the egress allowlist of tenant {tenants[me]}" in refused["body"]
            assert refused["s"] < 1.0
        assert theirs.hits() == before  # never reached


def test_a_finished_jobs_credential_and_a_guessed_one_are_refused(
        clients: dict[str, Airlock], tenant_endpoints: dict[str, Endpoint],
        egress_settings: Settings) -> None:
    a = tenant_endpoints["a"]
    first = run(clients["a"], "import os; print('PROXY', os.environ['HTTP_PROXY'])")
    old_proxy = next(line.split()[1] for line in first.stdout.splitlines() if line.startswith("PROXY"))
    assert old_proxy.count(":") == 3 and "@" in old_proxy  # http://user:token@ip:port
    user = old_proxy.split("//")[1].split(":")[0]
    proxy_at = f"{egress_settings.egress.proxy_ip}:{egress_settings.egress.proxy_port}"
    guessed = f"http://{user}:{'A' * 43}@{proxy_at}"
    made_up = f"http://job-{'0' * 32}-1-abcdef:{'B' * 43}@{proxy_at}"
    got = ask(clients["a"], "A", [
        ["a: own credential, own endpoint", None, a.url],
        ["a: a finished job's credential (replayed)", old_proxy, a.url],
        ["a: the finished job's user, a guessed token", guessed, a.url],
        ["a: a made-up user and token", made_up, a.url],
        ["a: no credential", f"http://{proxy_at}", a.url],
    ])
    assert got["a: own credential, own endpoint"]["status"] == 200
    for label in ("a: a finished job's credential (replayed)", "a: the finished job's user, a guessed token",
                  "a: a made-up user and token", "a: no credential"):
        assert got[label]["status"] in (403, 407), (label, got[label])


def test_set_egress_takes_effect_within_seconds_without_a_proxy_restart(
        clients: dict[str, Airlock], tenants: dict[str, str], egress_settings: Settings,
        tenant_endpoints: dict[str, Endpoint]) -> None:
    a, extra = tenant_endpoints["a"], tenant_endpoints["c"]
    api = docker.APIClient(version="auto")
    started = api.inspect_container(PROXY_NAME)["State"]["StartedAt"]
    store = TenantStore(make_engine(egress_settings.database_url))
    code = probes.job_code(LONG_RUNNING, own=a.host, later=extra.host, seconds=12)
    handle = clients["a"].submit({"code": code, "network": "egress", "limits": {"timeout_s": 60}})
    try:
        _wait_running(handle, clients["a"])
        time.sleep(3)
        changed_at = time.time()
        store.set_egress(tenants["a"], [a.host, extra.host])
        record = handle.wait(90)
    finally:
        store.set_egress(tenants["a"], [a.host])
        store.engine.dispose()
    assert record.verdict == "ok", record.summary()
    seen = probes.report(record.stdout)["seen"]
    first_ok = next(t for t, _, _, later in seen if later == 200)
    assert all(later == 403 for t, _, _, later in seen if t < changed_at)
    assert all(later == 200 for t, _, _, later in seen if t > first_ok)
    assert {own for _, own, _, _ in seen} == {200}
    ports = {port for _, _, port, _ in seen}
    assert len(ports) == 1  # the job's connection to its own endpoint stayed open throughout
    assert api.inspect_container(PROXY_NAME)["State"]["StartedAt"] == started
    took = first_ok - changed_at
    assert took < 5.0, took
    MATRIX[("A", f"a: set-egress adds {extra.host} mid-job")] = (
        f"403 before, 200 from {took:.1f} s after the change; {len(seen)} requests on one"
        f" kept-alive connection to {a.host} (all 200); proxy not restarted")
    api.close()


def _wait_running(handle: JobHandle, client: Airlock, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while client.store.get(parse_job_id(handle.id)).status != "running":
        assert time.monotonic() < deadline, "the long job did not start"
        time.sleep(0.2)
    time.sleep(1.0)  # its container's start, then its first requests
