"""A job's network from the settings (tasks/egress.py): pure parts, no services."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from base.errors import JobSpecError
from config.settings import Settings
from tasks import egress
from tasks.contract import resolve
from tasks.planning import HostFacts, payload_for, plan_for
from tasks.preflight import Seen, judge_egress
from tests.launcher_frame import decode
from workers import networks
from workers.spec import build_create_kwargs
from workers.verdict import Verdict

LIB_SH = Path(__file__).resolve().parents[2] / "scripts" / "firewall" / "lib.sh"


HOST = HostFacts(seccomp_json="{}", seccomp_sha256="")


def payload_env(payload: bytes) -> dict[str, str]:
    return decode(payload).env


def test_no_network_is_the_default_and_gets_nothing() -> None:
    s = Settings(egress_enabled=True)
    _, job = resolve({"code": "print(1)"}, s)
    plan = plan_for(s, HOST, job, name="airlock-x", uid=2_000_000_001, now=0.0)
    assert job.network == "none" and plan.network_mode == "none"
    assert plan.dns_options == () and dict(plan.ro_binds) == {}
    assert not any("proxy" in k.lower() for k in payload_env(payload_for(job, s)))


def test_an_egress_job_gets_the_workspace_network_the_ca_and_the_proxy_in_its_payload() -> None:
    s = Settings(egress_enabled=True, proxy_ip="172.29.0.3", proxy_port=3130)
    _, job = resolve({"code": "print(1)", "network": "egress", "env": {"SSL_CERT_FILE": "/x"}}, s)
    plan = plan_for(s, HOST, job, name="airlock-x", uid=2_000_000_001, now=0.0)
    assert plan.network_mode == "airlock-workspace"
    assert plan.dns_options == ("timeout:1", "attempts:1")
    assert dict(plan.ro_binds) == {"airlock-egress-ca": "/etc/airlock/egress-ca"}
    assert "airlock-egress-ca:/etc/airlock/egress-ca:ro" in build_create_kwargs(plan)["host_config"]["Binds"]
    env = payload_env(payload_for(job, s))
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://172.29.0.3:3130"
    assert env["SSL_CERT_FILE"] == networks.CA_FILE  # the network's value wins over the job's
    assert env["PATH"].startswith("/opt/venv/bin")


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY", "no_proxy",
                                  "PIP_PROXY", "npm_config_https_proxy", "AIRLOCK_X"])
def test_a_job_cannot_set_the_proxy_variables(name: str) -> None:
    with pytest.raises(JobSpecError, match=f"env.{name}"):
        resolve({"code": "1", "network": "egress", "env": {name: "http://evil:1"}}, Settings())


def test_egress_is_refused_unless_enabled() -> None:
    with pytest.raises(JobSpecError, match="network: egress is not enabled"):
        egress.check_allowed("egress", Settings())
    egress.check_allowed("egress", Settings(egress_enabled=True))
    egress.check_allowed("none", Settings())


def test_tenant_endpoints_join_the_allowlist_once_and_in_order() -> None:
    s = Settings(egress_tenant_endpoints="bedrock-runtime.eu-west-1.amazonaws.com, pypi.org")
    assert egress.allowlist(s) == ("pypi.org,files.pythonhosted.org,registry.npmjs.org,"
                                   "api.anthropic.com,bedrock-runtime.eu-west-1.amazonaws.com")


@pytest.mark.parametrize("bad", ["10.0.0.1", "PyPI.org", "pypi.org:443", "*.example.org", "a b"])
def test_allowlist_entries_must_be_domain_names(bad: str) -> None:
    with pytest.raises(ValidationError, match="domain names"):
        Settings(egress_allowlist=bad)


def test_allowlists_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_EGRESS_ALLOWLIST", "pypi.org,.example.org")
    monkeypatch.setenv("AIRLOCK_EGRESS_TENANT_ENDPOINTS", "bedrock-runtime.us-east-1.amazonaws.com")
    s = Settings()
    assert s.egress.allowlist == ("pypi.org", ".example.org")
    assert s.egress.tenant_endpoints == ("bedrock-runtime.us-east-1.amazonaws.com",)


def test_default_network_plans_are_the_ones_compose_and_the_scripts_use() -> None:
    assert egress.network_plans(Settings()) == (networks.BACKEND, networks.WORKSPACE, networks.EGRESS)
    _, ws, _ = egress.network_plans(Settings(workspace_subnet="10.200.0.0/23"))
    assert (ws.ip_range, ws.gateway, ws.internal, ws.icc) == ("10.200.1.0/24", "10.200.0.1", True, False)


def test_the_firewall_scripts_get_every_setting_they_read_with_the_same_defaults() -> None:
    read = dict(re.findall(r'"\$\{(AIRLOCK_[A-Z_]+):-([^}]*)\}"', LIB_SH.read_text()))
    env = egress.firewall_env(Settings())
    assert read and {k: env[k] for k in read} == read


def test_the_egress_canary_needs_the_proxy_reached_and_nothing_else() -> None:
    def seen(**got: str) -> Seen:
        return Seen(Verdict.OK, json.dumps(got) + "\n", {})

    assert judge_egress(seen(proxy="connected", metadata="ConnectionRefusedError")) is None
    assert "metadata" in (judge_egress(seen(proxy="connected", metadata="connected")) or "")
    assert "proves nothing" in (judge_egress(seen(proxy="OSError", metadata="OSError")) or "")
    assert "did not report" in (judge_egress(Seen(Verdict.TIMEOUT, "", {})) or "")
