"""Agent jobs, the security design's layer 6 (ATTACKS.md A40), through the public path on the
egress worker: a job of the ``agent`` profile, with its tenant's secrets injected, whose
commands run in the inner sandbox Airlock configured.

Inside the inner sandbox, a command must find (the issue's checks):
(a) /workspace writable; /home/appuser, /opt/venv, / (and /tmp, /var/tmp, /run) not;
(b) no network but the proxy: a direct connect to the egress proxy's address and to the job's
    own loopback listener fail, a domain off the allowlist gets 403, an allowlisted one works
    (the proxy chain: the sandbox's proxy, then Airlock's egress proxy);
(c) no injected secret in its environment, in any /proc/*/environ or cmdline;
(d) only its own processes in /proc;
(e) no further user namespace.
First through srt with the settings Airlock wrote, then through the real Claude Agent SDK: its
bundled CLI talks to a stand-in of the Messages API (the real one is never reachable from
here: the fleet's allowlist leaves api.anthropic.com out), which asks its Bash tool to run the
same probe; the result comes back to the stand-in and the job's output carries the agent's
final message.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from config.settings import Settings
from tasks.inner_canary import INNER_PROBE, WRITE_TARGETS, outer_code
from tasks.secrets import SecretBox, SecretStore
from tests.network.conftest import MESSAGES_API, MessagesApi, RunEgress, proxy_log

pytestmark = [pytest.mark.network, pytest.mark.integration]

SECRETS = ("ANTHROPIC_API_KEY", "TOOL_TOKEN")
MEASURED: dict[str, Any] = {}  # artifacts/agent.json: what each check observed
OUTSIDE = ("/.airlock/init", "main.py", "srt --settings", "_bundled/claude")


@pytest.fixture(scope="module", autouse=True)
def measured(artifacts: Path) -> Iterator[None]:
    yield
    (artifacts / "agent.json").write_text(json.dumps(MEASURED, indent=1, sort_keys=True))


@pytest.fixture(scope="module")
def tenant_secrets(egress_client: Airlock, egress_settings: Settings) -> Iterator[dict[str, str]]:
    """The default tenant's secrets for these jobs: fresh values, deleted afterwards."""
    store = SecretStore(egress_client.store.engine, SecretBox.from_settings(egress_settings))
    values = {"ANTHROPIC_API_KEY": "sk-ant-standin-" + os.urandom(12).hex(),
              "TOOL_TOKEN": "tool-token-" + os.urandom(12).hex()}
    for name, value in values.items():
        store.set("default", name, value)
    yield values
    for name in values:
        store.delete("default", name)


def proxied_urls(since: float) -> list[str]:
    """The URLs of the requests the egress proxy logged since ``since`` (its access log)."""
    # (A connection closed before any request, such as the proxy's health check, is logged
    # as error:transaction-end-before-headers: no request.)
    return [f[6] for f in proxy_log(since) if not f[6].startswith("error:")]


def probe_args(egress_settings: Settings, api: MessagesApi) -> dict[str, Any]:
    e = egress_settings.egress
    return {"write": list(WRITE_TARGETS), "proxy": [e.proxy_ip, e.proxy_port],
            "http": {"denied": "http://not-allowed.example/", "allowed": f"{api.url}/health"}}


def assert_held(inner: dict[str, Any], secrets: dict[str, str], egress_settings: Settings) -> None:
    """(a)-(e) from the probe's report, run inside the inner sandbox."""
    writes = inner["write"]
    assert writes["/workspace"] == "written"  # (a)
    assert {p: w for p, w in writes.items() if p != "/workspace"} == {
        p: "EROFS" for p in WRITE_TARGETS if p != "/workspace"}, writes
    assert inner["interfaces"] == ["lo"], inner  # (b)
    assert inner["proxy_direct"] == "ENETUNREACH", inner
    assert inner["listener"] == "ECONNREFUSED", inner
    denied, allowed = inner["http"]["denied"], inner["http"]["allowed"]
    assert denied[0] == 403, denied
    assert allowed == [200, "ok"], allowed
    assert inner["secret_in_env"] == [], inner  # (c)
    assert all(p["secret_in"] == [] for p in inner["procs"].values()), inner["procs"]
    assert not any(v in json.dumps(inner) for v in secrets.values())
    outside = [p["cmd"] for p in inner["procs"].values() if any(m in p["cmd"] for m in OUTSIDE)]
    assert outside == [] and len(inner["procs"]) <= 8, inner["procs"]  # (d)
    assert len(inner["nspid"]) == 1 and int(inner["nspid"][0]) < 16, inner["nspid"]
    assert inner["unshare_user"] == "EPERM", inner  # (e)


def test_a40_through_srt_a_command_in_the_inner_sandbox_is_held(
        run_egress: RunEgress, messages_api: MessagesApi, tenant_secrets: dict[str, str],
        egress_settings: Settings) -> None:
    # Given an agent job with two secrets and egress, when it runs a probe through srt with the
    # settings Airlock wrote for it
    args = probe_args(egress_settings, messages_api)
    record = run_egress(outer_code(SECRETS, **args), profile="agent", secrets=list(SECRETS),
                        limits={"timeout_s": 120})
    assert record.verdict == "ok", record.summary() + record.stderr[-2000:]
    got = json.loads(record.stdout.strip().splitlines()[-1])
    MEASURED["srt"] = got
    # Then the job had its secrets, the sandbox started, and every check holds inside it
    assert got["outer_sees_secret"] is True and got["srt_exit"] == 0, got
    assert_held(got["inner"], tenant_secrets, egress_settings)
    assert "host is not on the allow list" in got["inner"]["http"]["denied"][1] or \
        got["inner"]["http"]["denied"][0] == 403


AGENT_JOB = r"""
import json, os, socket, sys
from urllib.parse import urlsplit
import anyio
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, ToolUseBlock, query

# What the stand-in's Bash command runs (the inner sandbox's probe) and its arguments: the
# secrets reversed (never their values), this job's loopback listener, the proxy's address.
with open("/workspace/.airlock-inner-probe.py", "w") as f:
    f.write(PROBE)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
proxy = urlsplit(os.environ["HTTPS_PROXY"])
args = dict(ARGS, listener=listener.getsockname()[1], proxy=[proxy.hostname, proxy.port],
            needles_reversed=[os.environ[n][::-1] for n in SECRET_NAMES])
with open("/workspace/.airlock-inner-probe.json", "w") as f:
    json.dump(args, f)

async def main():
    # No sandbox option here: Airlock's managed settings decide (sandbox on, fail closed).
    options = ClaudeAgentOptions(cwd="/workspace", permission_mode="default",
                                 allowed_tools=["Bash"], max_turns=4, setting_sources=[],
                                 stderr=lambda line: print("[cli]", line, file=sys.stderr),
                                 extra_args={"debug-file": "/workspace/.claude-debug.log"})
    final = None
    async for message in query(prompt="Run the probe, then say what it printed first.",
                               options=options):
        if isinstance(message, AssistantMessage):
            for block in message.content:
                if isinstance(block, ToolUseBlock):
                    print("tool_use", block.name, json.dumps(block.input), flush=True)
        elif isinstance(message, ResultMessage):
            final = message
    print(json.dumps({"result": final and final.result, "is_error": final and final.is_error,
                      "turns": final and final.num_turns}))
    if final is None or final.is_error or "hello-from-bash" not in (final.result or ""):
        with open("/workspace/.claude-debug.log", errors="replace") as f:  # for the failure
            sys.stderr.write(f.read()[-6000:])
    return 0 if final is not None and not final.is_error else 1

sys.exit(anyio.run(main))
"""


def test_a40_the_claude_agent_sdk_runs_its_bash_tool_in_bubblewrap_against_the_stand_in(
        run_egress: RunEgress, messages_api: MessagesApi, tenant_secrets: dict[str, str],
        egress_settings: Settings) -> None:
    # Given the real SDK in an agent job, its API key a tenant's secret, its endpoint the
    # stand-in (a tenant endpoint, reached through the egress proxy)
    before, started = len(messages_api.requests()), time.time()
    code = (f"PROBE = {INNER_PROBE!r}\nARGS = {probe_args(egress_settings, messages_api)!r}\n"
            f"SECRET_NAMES = {list(SECRETS)!r}\n{AGENT_JOB}")
    record: JobRecord = run_egress(
        code, profile="agent", secrets=list(SECRETS), limits={"timeout_s": 180}, wait=240,
        env={"ANTHROPIC_BASE_URL": messages_api.url, "CLAUDE_CODE_MAX_RETRIES": "1"})
    seen = messages_api.requests()[before:]
    MEASURED["sdk"] = {"record": {"verdict": record.verdict, "wall_ms": record.wall_ms,
                                  "stdout": record.stdout[-2000:], "stderr": record.stderr[-8000:]},
                     "stand_in": seen}
    assert record.verdict == "ok", record.summary() + record.stderr[-3000:]
    # Then the agent's final message is the job's output, quoting the command's first line
    final = json.loads(record.stdout.strip().splitlines()[-1])
    assert final["is_error"] is False and final["turns"] == 2, final
    assert final["result"].startswith("FINAL: the command said 'hello-from-bash' (is_error=False)")
    # The stand-in got exactly the scripted conversation, with the injected key, through the
    # proxy (its one way here) and nothing else
    posts = [r for r in seen if r["method"] == "POST"]
    assert [r["stop_reason"] for r in posts] == ["tool_use", "end_turn"], seen
    key = hashlib.sha256(tenant_secrets["ANTHROPIC_API_KEY"].encode()).hexdigest()
    assert all(r["api_key_sha256"] == key for r in posts)
    assert [r["path"] for r in seen if r["method"] == "GET"] == ["/health"]  # the probe's fetch
    # Nothing else went out: the egress proxy saw the stand-in's requests only (no telemetry,
    # no update check, no api.anthropic.com)
    urls = proxied_urls(started)
    MEASURED["sdk"]["proxy_log"] = urls
    assert len(urls) == 3 and all(u.startswith(f"http://{MESSAGES_API}/") for u in urls), urls
    # And the command ran inside bubblewrap, where (a)-(e) held
    text = posts[1]["tool_result"]["text"]
    assert posts[1]["tool_result"]["is_error"] is False, text[-2000:]
    inner = next(json.loads(line) for line in text.splitlines() if line.startswith('{"uid"'))
    MEASURED["sdk"]["inner"] = inner
    assert_held(inner, tenant_secrets, egress_settings)
    # PID 1 of its pid namespace: the CLI's own seccomp helper (run from a file descriptor),
    # which then runs the shell: the command was in bubblewrap, under the inner filter.
    assert inner["procs"]["1"]["cmd"].startswith("/proc/self/fd/"), inner["procs"]
    assert MESSAGES_API in messages_api.url
