"""The preflight's inner-sandbox canary (tasks/inner_canary.py): its judge, pure, and what a
worker does with its verdict (agent jobs refused, others served)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from base.errors import HostNotSafe
from config.settings import Settings
from tasks import inner_canary, preflight
from tasks.contract import resolve
from tasks.execute import check_inner_sandbox
from tasks.preflight_kit import CanaryResult, PreflightResult, Seen
from workers.verdict import Verdict

HELD: dict[str, Any] = {
    "uid": 2000000010,
    "write": {"/workspace": "written", "/home/appuser": "EROFS", "/opt/venv": "EROFS",
              "/": "EROFS", "/tmp": "EROFS"},
    "interfaces": ["lo"], "listener": "ECONNREFUSED", "http": {},
    "procs": {"1": {"cmd": "/opt/srt/.../apply-seccomp /usr/bin/bash -c python3 ...", "secret_in": []},
              "2": {"cmd": "python3 /workspace/.airlock-inner-probe.py {}", "secret_in": []}},
    "secret_in_env": [], "unshare_user": "EPERM", "unshare_net": "EPERM", "nspid": ["2"],
}


def seen(inner: dict[str, Any] | None = None, **outer: Any) -> Seen:
    report = {"outer_sees_secret": True, "srt_exit": 0, "stderr": "",
              "inner": HELD if inner is None else inner} | outer
    return Seen(Verdict.OK, "srt says hello\n" + json.dumps(report) + "\n", {})


def test_a_sandbox_that_holds_is_contained() -> None:
    assert inner_canary.judge_inner(seen()) is None


@pytest.mark.parametrize(("change", "says"), [
    ({"write": HELD["write"] | {"/home/appuser": "written"}}, "writable outside /workspace"),
    ({"write": HELD["write"] | {"/workspace": "EROFS"}}, "cannot write /workspace"),
    ({"interfaces": ["eth0", "lo"]}, "interfaces"),
    ({"listener": "connected"}, "loopback listener"),
    ({"secret_in_env": ["PREFLIGHT_CANARY_SECRET"]}, "secret is visible"),
    ({"procs": HELD["procs"] | {"9": {"cmd": "x", "secret_in": ["environ"]}}}, "secret is visible"),
    ({"procs": HELD["procs"] | {"7": {"cmd": "/.airlock/init 60 /.airlock/in", "secret_in": []}}},
     "outside the sandbox are visible"),
    ({"procs": HELD["procs"] | {"8": {"cmd": "python3 -u main.py", "secret_in": []}}},
     "outside the sandbox are visible"),
    ({"unshare_user": 0}, "further user namespace"),
])
def test_each_breach_is_named(change: dict[str, Any], says: str) -> None:
    why = inner_canary.judge_inner(seen(HELD | change))
    assert why is not None and says in why


def test_a_sandbox_that_did_not_start_or_a_probe_without_its_secret_proves_nothing() -> None:
    report = {"outer_sees_secret": True, "srt_exit": 1, "inner": None,
              "stderr": "bwrap: No permissions to create new namespace"}
    why = inner_canary.judge_inner(Seen(Verdict.OK, json.dumps(report), {}))
    assert why is not None and "did not start" in why and "No permissions" in why
    assert "proves nothing" in str(inner_canary.judge_inner(seen(outer_sees_secret=False)))
    assert "did not report" in str(inner_canary.judge_inner(Seen(Verdict.TIMEOUT, "", {})))


def test_one_canary_per_inner_sandbox_image_each_with_a_fresh_secret() -> None:
    s = Settings()
    first, second = preflight.inner_canaries(s)["agent"], preflight.inner_canaries(s)["agent"]
    assert list(preflight.inner_canaries(s)) == ["agent"] and first.name == "inner_sandbox[agent]"
    assert first.spec["profile"] == "agent" and first.spec["secrets"] == [inner_canary.SECRET_NAME]
    assert first.secrets != second.secrets
    _, job = resolve(first.spec, s)  # the contract takes it as any job
    assert job.inner_sandbox and job.secrets == (inner_canary.SECRET_NAME,)
    assert job.argv == ("python3", inner_canary.CANARY_FILE)  # whatever the profile's command
    assert preflight.inner_canaries(Settings(profiles={"python": s.profiles["python"]})) == {}
    # Two profiles of one image share its canary.
    shell = s.profiles["shell"].model_copy(update={"image": "airlock/agent:latest",
                                                   "inner_sandbox": True})
    both = preflight.inner_canaries(Settings(profiles=s.profiles | {"shell": shell}))
    assert both["shell"] is both["agent"]


def result(contained: bool) -> PreflightResult:
    inner = CanaryResult("inner_sandbox[agent]", contained, "contained" if contained else
                         "the inner sandbox did not start (srt exit 1): 'bwrap: ...'", "ok", 1.0)
    return PreflightResult(True, (), {}, 1.0, {"agent": inner})


def test_where_it_does_not_hold_the_worker_serves_on_and_refuses_agent_jobs_saying_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent = resolve({"code": "1", "profile": "agent"}, Settings())[1]
    plain = resolve({"code": "1"}, Settings())[1]
    monkeypatch.setattr(preflight, "_last", result(False))
    assert result(False).ok and "NOT HELD" in result(False).summary()
    with pytest.raises(HostNotSafe, match=r"'agent': the inner sandbox \(layer 6\) does not hold"
                                          r".*srt exit 1"):
        check_inner_sandbox(agent)
    check_inner_sandbox(plain)
    monkeypatch.setattr(preflight, "_last", result(True))
    check_inner_sandbox(agent)
    monkeypatch.setattr(preflight, "_last", None)
    with pytest.raises(HostNotSafe, match="no preflight ran"):
        check_inner_sandbox(agent)
