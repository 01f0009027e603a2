"""Per-tenant egress, the pure parts and the files: tenants' domains checked, a job's network
with its tenant's endpoints and its attempt's credential, the registry the workers write, and
the proxy's helper (images/proxy/registry_helper.py) reading it. No services."""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from base.errors import JobSpecError
from config.settings import Settings
from tasks import egress
from tasks.contract import resolve
from tasks.planning import HostFacts, payload_for, plan_for, provenance
from tests.launcher_frame import decode
from workers import networks
from workers.proxy_registry import Registry, job_of, new_credential, stale

HELPER = Path(__file__).resolve().parents[2] / "images" / "proxy" / "registry_helper.py"
JOB = "0b9e1c1e-59a4-4b8e-9b0c-3f3c2a0d7e11"
S = Settings(egress_enabled=True, egress_allowlist="pypi.org,.common.example")


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("registry_helper", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", str(tmp_path))
    monkeypatch.setenv("AIRLOCK_EGRESS_ALLOWLIST", "pypi.org,.common.example")
    return module


def test_tenant_domains_are_checked_lowered_and_kept_once() -> None:
    assert egress.check_domains(["Bedrock.EU.example.", ".a.example", "bedrock.eu.example"]) == (
        "bedrock.eu.example", ".a.example")


@pytest.mark.parametrize(("bad", "why"), [
    ("10.0.0.1", "an IP address"), ("[::1]", "an IP address"), (".192.168.0.1", "an IP address"),
    ("*.example.org", "wildcards"), ("a*b.example", "wildcards"), ("example", "not a host name"),
    ("exa mple.org", "not a host name"), ("-x.example.org", "not a host name"),
    ("a" * 250 + ".org", "not a host name"), ("", "not a host name"),
])
def test_bad_tenant_domains_are_refused_naming_the_entry(bad: str, why: str) -> None:
    with pytest.raises(JobSpecError, match=why) as caught:
        egress.check_domains([bad])
    assert caught.value.field.startswith("egress_domains[")


def test_an_egress_job_gets_its_tenants_domains_and_its_credential_in_the_payload_only() -> None:
    _, job = resolve({"code": "1", "network": "egress"}, S)
    job = replace(job, egress_domains=("bedrock.a.example",))
    cred = new_credential(JOB, 2, "tenant-a", time.time() + 60)
    env = decode(payload_for(job, S, credential=cred)).env
    url = f"http://{cred.user}:{cred.token}@{S.egress.proxy_ip}:3128"
    assert {env[k] for k in ("HTTP_PROXY", "https_proxy", "PIP_PROXY", "npm_config_proxy")} == {url}
    net = egress.job_network(S, "egress", job.egress_domains, cred)
    assert net.domains == ("pypi.org", ".common.example", "bedrock.a.example")
    plan = plan_for(S, HostFacts("{}", ""), job, name="airlock-x", uid=2_000_000_001, now=0.0)
    assert cred.token not in repr(plan) and cred.token not in repr(cred)
    assert cred.token not in repr(provenance(S, HostFacts("{}", ""), job, 2_000_000_001))


def test_without_a_credential_the_proxy_variables_carry_none() -> None:
    assert networks.proxy_env("172.29.0.2")["HTTPS_PROXY"] == "http://172.29.0.2:3128"


def test_the_registry_holds_a_hash_and_files_come_and_go(tmp_path: Path) -> None:
    reg = Registry(tmp_path).ensure()
    cred = new_credential(JOB, 1, "tenant-a", 2e9)
    reg.register(cred)
    text = (reg.creds / cred.user).read_text()
    assert cred.token not in text and text.split()[1:] == ["tenant-a", "2000000000"]
    assert job_of(cred.user) == (JOB, 1)
    reg.write_tenants({"tenant-a": ("a.example",), "tenant-b": (".b.example",)})
    reg.write_tenants({"tenant-b": (".b.example", "c.example")})
    assert sorted(p.name for p in reg.tenants.iterdir()) == ["tenant-b"]
    assert (reg.tenants / "tenant-b").read_text() == ".b.example\nc.example\n"
    assert reg.expired(now=2e9 + 1) == [cred.user] and reg.expired(now=0) == []
    reg.revoke(cred.user)
    reg.revoke(cred.user)
    assert reg.users() == []


def test_credentials_of_attempts_that_no_longer_run_are_stale() -> None:
    live, old = new_credential(JOB, 2, "t", 0), new_credential(JOB, 1, "t", 0)
    other = new_credential("1" * 8 + "-1111-1111-1111-" + "1" * 12, 1, "t", 0)
    assert stale([live.user, old.user, other.user, "not-ours"], {JOB: 2}) == [
        old.user, other.user, "not-ours"]


def test_the_helper_authenticates_live_credentials_only(helper: ModuleType, tmp_path: Path) -> None:
    reg = Registry(tmp_path).ensure()
    cred, gone = new_credential(JOB, 1, "tenant-a", time.time() + 60), new_credential(JOB, 2, "a", 0)
    reg.register(cred)
    reg.register(gone)  # expired
    assert helper.answer("auth", f"{cred.user} {cred.token}\n") == "OK"
    assert helper.answer("auth", f"{cred.user} {cred.token[:-1]}x\n") == "ERR"
    assert helper.answer("auth", f"{gone.user} {gone.token}\n") == "ERR"
    assert helper.answer("auth", f"../{cred.user} {cred.token}\n") == "ERR"
    reg.revoke(cred.user)
    assert helper.answer("auth", f"{cred.user} {cred.token}\n") == "ERR"


def test_the_helper_allows_the_common_list_and_the_tenants_own(helper: ModuleType,
                                                               tmp_path: Path) -> None:
    reg = Registry(tmp_path).ensure()
    a = new_credential(JOB, 1, "tenant-a", time.time() + 60)
    reg.register(a)
    reg.write_tenants({"tenant-a": (".a.example",), "tenant-b": ("b.example",)})
    assert [helper.answer("acl", f"{a.user} {host}") for host in (
        "pypi.org", "x.common.example", "a.example", "deep.x.a.example", "A.EXAMPLE.")] == ["OK"] * 5
    refused = helper.answer("acl", f"{a.user} b.example")
    assert refused == ('ERR message="b.example is not on the egress allowlist of tenant tenant-a.'
                       ' Allowed: pypi.org .common.example .a.example (a leading dot also allows'
                       ' subdomains; the endpoints of a tenant: airlock tenant set-egress)."')
    assert helper.answer("acl", f"{a.user} evil%22.example").startswith('ERR message="evil?.example')
    reg.revoke(a.user)
    assert "revoked" in helper.answer("acl", f"{a.user} pypi.org")


def test_an_external_proxy_must_read_the_registry_read_only() -> None:
    good = {"Mounts": [{"Source": "/run/airlock/egress", "Destination": networks.REGISTRY_DIR,
                        "RW": False}],
            "Config": {"Env": [f"AIRLOCK_EGRESS_REGISTRY={networks.REGISTRY_DIR}"]}}
    assert networks.proxy_problems(good, "/run/airlock/egress") == []
    writable = good | {"Mounts": [dict(good["Mounts"][0], RW=True)]}  # type: ignore[call-overload]
    assert len(networks.proxy_problems(writable, "/run/airlock/egress")) == 1
    assert len(networks.proxy_problems({}, "/run/airlock/egress")) == 2


class FakeStore:
    def __init__(self, states: dict[str, tuple[str, int, float]]) -> None:
        self._states = states

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, int, float]]:
        return {j: self._states[j] for j in job_ids if j in self._states}


def test_the_sweep_removes_settled_stale_and_expired_credentials(tmp_path: Path) -> None:
    from tasks import egress_access

    s = Settings(egress_registry_dir=str(tmp_path))
    reg = Registry(tmp_path).ensure()
    live, ended, fresh = (new_credential(JOB, n, "t", 2e9) for n in (3, 2, 1))
    other = "5" * 8 + "-5555-5555-5555-" + "5" * 12
    expired = new_credential(other, 1, "t", 1.0)
    for cred in (live, ended, fresh, expired):
        reg.register(cred)
    now = time.time()
    for cred in (live, ended, expired):  # written long ago: their attempt settled
        os.utime(reg.creds / cred.user, (now - 60, now - 60))
    store = FakeStore({JOB: ("running", 3, -1.0), other: ("running", 1, -1.0)})
    gone = egress_access.sweep(s, store, now)  # type: ignore[arg-type]
    assert sorted(gone) == sorted([ended.user, expired.user])
    assert sorted(reg.users()) == sorted([live.user, fresh.user])  # fresh: within the grace


def test_egress_bytes_are_the_users_replies_in_squids_access_log() -> None:
    from tasks.egress_access import access_log_bytes

    user = new_credential(JOB, 1, "t", 0).user
    at = "1796532062.735      3 172.29.0.128"
    log = "\n".join([
        f"{at} TCP_MISS/200 1234 GET http://a.example/ {user} HIER_DIRECT/1.2.3.4 text/plain",
        f"{at} TCP_DENIED/403 603 GET http://b.example/ {user} HIER_NONE/- text/html",
        f"{at} TCP_MISS/200 999 GET http://a.example/ job-other HIER_DIRECT/1.2.3.4 -",
        "2026/12/06 04:31:12| a cache.log line, not an access",
    ])
    assert access_log_bytes(log, user) == 1234 + 603
