"""An agent job's inner sandbox, the pure parts: the settings Airlock writes for it
(workers/inner_sandbox.py), its container (workers/spec.py) and its plan, payload and
provenance (tasks/planning.py). Every other profile keeps today's container."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.agent_seccomp import agent_profile
from config.seccomp import for_engine, load_profile, profile_sha256
from config.settings import Settings
from tasks import planning
from tasks.contract import resolve
from tasks.planning import HostFacts, payload_for, plan_for, provenance
from tests.launcher_frame import decode
from workers import inner_sandbox
from workers.inner_sandbox import InnerSandbox
from workers.spec import build_create_kwargs

BASE = for_engine(load_profile())
AGENT = for_engine(agent_profile(load_profile()))
HOST = HostFacts(BASE, profile_sha256(BASE), agent_seccomp_json=AGENT)
SETTINGS = Settings(egress_enabled=True, egress_tenant_endpoints=("bedrock.example.com",),
                    egress_allowlist=("pypi.org", ".pythonhosted.org"))


def planned(spec: dict[str, object], s: Settings = SETTINGS):  # type: ignore[no-untyped-def]
    _, job = resolve(spec, s)
    return job, plan_for(s, HOST, job, name="airlock-x", uid=2_000_000_009, now=0.0)


# --- the settings Airlock writes ------------------------------------------------------------

def test_claude_code_gets_the_sandbox_on_fail_closed_with_nothing_let_out() -> None:
    box = InnerSandbox(("pypi.org", ".example.org"), ("ANTHROPIC_API_KEY", "TOOL_TOKEN"))
    sandbox = inner_sandbox.managed_settings(box)["sandbox"]
    assert sandbox["enabled"] is True and sandbox["failIfUnavailable"] is True
    assert sandbox["allowUnsandboxedCommands"] is False
    assert sandbox["enableWeakerNestedSandbox"] is False  # it would bind the container's /proc
    assert sandbox["network"] == {"allowedDomains": ["pypi.org", "example.org", "*.example.org"],
                                  "allowManagedDomainsOnly": True}
    assert sandbox["filesystem"]["allowWrite"] == ["/workspace"]
    assert {"/home/appuser", "/opt/venv", "/tmp", "/var/tmp"} <= set(sandbox["filesystem"]["denyWrite"])
    assert sandbox["credentials"]["envVars"] == [{"name": "ANTHROPIC_API_KEY", "mode": "deny"},
                                                 {"name": "TOOL_TOKEN", "mode": "deny"}]


def test_its_environment_scrubs_secrets_and_sends_nothing_but_the_model_calls() -> None:
    env = inner_sandbox.managed_settings(InnerSandbox())["env"]
    assert env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_TMPDIR"].startswith("/workspace/")  # /tmp is denied to tools
    assert inner_sandbox.managed_settings(InnerSandbox())["permissions"] == {
        "disableBypassPermissionsMode": "disable"}


def test_srt_gets_the_same_policy() -> None:
    box = InnerSandbox((".example.org",), ("TOOL_TOKEN",))
    srt = inner_sandbox.srt_settings(box)
    claude = inner_sandbox.managed_settings(box)["sandbox"]
    assert srt["network"]["allowedDomains"] == claude["network"]["allowedDomains"]
    assert srt["filesystem"]["allowWrite"] == claude["filesystem"]["allowWrite"]
    assert srt["filesystem"]["denyWrite"] == claude["filesystem"]["denyWrite"]
    assert srt["credentials"] == claude["credentials"]
    assert srt["enableWeakerNestedSandbox"] is False


def test_no_network_means_no_domain() -> None:
    assert inner_sandbox.srt_settings(InnerSandbox())["network"]["allowedDomains"] == []


def test_the_files_are_written_read_only_for_the_job_never_through_a_link(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        inner_sandbox.write(fd, InnerSandbox(("pypi.org",), ("K",)))
        with pytest.raises(FileExistsError):  # O_EXCL: never over what is there
            inner_sandbox.write(fd, InnerSandbox())
    finally:
        os.close(fd)
    for name in inner_sandbox.TARGETS:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / inner_sandbox.MANAGED).read_text())["sandbox"]["enabled"] is True


# --- the container ---------------------------------------------------------------------------

def test_an_agent_job_gets_the_agent_seccomp_unmasked_proc_and_its_settings_bound() -> None:
    _, plan = planned({"code": "1", "profile": "agent"})
    kwargs = build_create_kwargs(plan)
    hc = kwargs["host_config"]
    assert hc["SecurityOpt"] == ["no-new-privileges:true", "seccomp=" + AGENT]
    assert hc["MaskedPaths"] == [] and hc["ReadonlyPaths"] == []
    binds = {m["Target"]: m for m in hc["Mounts"]}
    for name, target in inner_sandbox.TARGETS.items():
        assert binds[target] == {"Type": "bind", "Source": f"/run/airlock/io/airlock-x/{name}",
                                 "Target": target, "ReadOnly": True}
    # /etc/hosts must name localhost (the inner sandbox's bridges dial it): without a network
    # the engine writes none, so Airlock binds its own; with egress, the engine's is there.
    assert kwargs["network_disabled"] is True and hc["NetworkMode"] == "none"
    assert "localhost" in inner_sandbox.HOSTS_TEXT
    _, egress = planned({"code": "1", "profile": "agent", "network": "egress"})
    targets = [m["Target"] for m in build_create_kwargs(egress)["host_config"]["Mounts"]]
    assert "/etc/hosts" not in targets and "/etc/claude-code/managed-settings.json" in targets
    # Everything else is every job's hardening.
    assert hc["CapDrop"] == ["ALL"] and hc["ReadonlyRootfs"] is True and hc["Privileged"] is False


@pytest.mark.parametrize("profile", ["python", "shell", "node", "c"])
def test_every_other_profile_keeps_the_base_profile_and_the_engines_masks(profile: str) -> None:
    _, plan = planned({"code": "1", "profile": profile})
    kwargs = build_create_kwargs(plan)
    hc = kwargs["host_config"]
    assert hc["SecurityOpt"] == ["no-new-privileges:true", "seccomp=" + BASE]
    assert "MaskedPaths" not in hc and "ReadonlyPaths" not in hc  # absent: the engine's masks
    assert not set(inner_sandbox.TARGETS.values()) & {m["Target"] for m in hc["Mounts"]}
    assert kwargs["network_disabled"] is True and plan.inner_sandbox is None


def test_the_policy_is_the_jobs_network_and_secrets() -> None:
    _, plan = planned({"code": "1", "profile": "agent", "network": "egress",
                       "secrets": ["ANTHROPIC_API_KEY"]})
    assert plan.inner_sandbox == InnerSandbox(
        ("pypi.org", ".pythonhosted.org", "bedrock.example.com"), ("ANTHROPIC_API_KEY",))
    _, none = planned({"code": "1", "profile": "agent"})
    assert none.inner_sandbox == InnerSandbox((), ())


def test_a_worker_that_could_not_derive_the_agent_profile_refuses_agent_jobs() -> None:
    from base.errors import HostNotSafe

    _, job = resolve({"code": "1", "profile": "agent"}, SETTINGS)
    with pytest.raises(HostNotSafe, match="agent seccomp profile"):
        plan_for(SETTINGS, HostFacts(BASE, ""), job, name="x", uid=2_000_000_009, now=0.0)
    assert planning.agent_seccomp(SETTINGS.but(seccomp_profile="/nonexistent")) == ""


# --- payload and provenance ------------------------------------------------------------------

def test_secrets_reach_the_payload_only_and_airlocks_variables_win() -> None:
    job, _ = planned({"code": "1", "profile": "agent", "network": "egress",
                      "secrets": ["ANTHROPIC_API_KEY"], "env": {"CLAUDE_CODE_TMPDIR": "/tmp/x"}})
    env = decode(payload_for(job, SETTINGS, {"ANTHROPIC_API_KEY": "sk-test-0"})).env
    assert env["ANTHROPIC_API_KEY"] == "sk-test-0"
    assert env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] == "1"
    assert env["CLAUDE_CODE_TMPDIR"] == inner_sandbox.TMPDIR
    assert env["HTTPS_PROXY"].startswith("http://172.29.0.2")  # the CLI's way out: the proxy
    plain, _ = planned({"code": "1"})
    assert "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB" not in decode(payload_for(plain, SETTINGS)).env


def test_provenance_names_the_agent_profiles_hash_the_settings_and_secrets_by_name() -> None:
    job, _ = planned({"code": "1", "profile": "agent", "secrets": ["ANTHROPIC_API_KEY"]})
    got = provenance(SETTINGS, HOST, job, 2_000_000_009)
    assert got["seccomp_sha256"] == profile_sha256(AGENT) != profile_sha256(BASE)
    assert got["secrets"] == ["ANTHROPIC_API_KEY"]
    assert set(got["inner_sandbox"]) == set(inner_sandbox.TARGETS)
    plain, _ = planned({"code": "1"})
    assert provenance(SETTINGS, HOST, plain, 1)["seccomp_sha256"] == profile_sha256(BASE)
    assert "inner_sandbox" not in provenance(SETTINGS, HOST, plain, 1)


def test_an_inner_sandbox_profile_is_never_pooled() -> None:
    with pytest.raises(ValidationError, match="not pooled"):
        Settings(pool_profiles=("python", "agent"))
    # Nor handed a warm container of another profile that shares its image.
    from types import SimpleNamespace

    from tasks.attempt import from_pool

    taken: list[str] = []
    pool = SimpleNamespace(take=lambda job, *_: taken.append(job.profile) or "warm")
    ctx, claim = SimpleNamespace(pool=pool), SimpleNamespace(job_id="j", attempt=1)
    agent, _ = planned({"code": "1", "profile": "agent"})
    plain, _ = planned({"code": "1"})
    assert from_pool(ctx, claim, agent) is None  # type: ignore[arg-type]
    assert from_pool(ctx, claim, plain) == "warm" and taken == ["python"]  # type: ignore[arg-type]
