"""Secrets and the control plane (A29, A32): a secret hunt, the API's refusals, the host check."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from airlock.client import Airlock
from base.errors import JobSpecError
from config.settings import Settings
from tasks import preflight
from tasks.secrets import SecretBox, SecretStore
from tests.attacks.conftest import Attack
from tests.conftest import AGENT_RUN
from tests.services import WorkerProcess, job_count
from workers import inner_sandbox

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
MARK = "airlockfake" + "secret"  # every fake secret starts with it; the hunt greps for it


@pytest.fixture(scope="module")
def secret_worker(settings: Settings, artifacts: Path) -> Iterator[tuple[Airlock, dict[str, str]]]:
    """A worker whose broker, database, Flower and API credentials are (fake) secrets.

    PostgreSQL trusts local connections and Redis's default user has no password, so the
    password-bearing URLs work: the hunt below can fail if any of them leaks into a job."""
    tag = uuid.uuid4().hex[:8]
    secrets = {name: f"{MARK}-{name}-{tag}" for name in ("db", "redis", "flower", "api")}
    redis = make_url(settings.redis_url.replace("redis://", "postgresql://", 1))
    redis_url = f"redis://default:{secrets['redis']}@{redis.host}:{redis.port}/{redis.database}"
    s = settings.but(**{
        "queue": f"{settings.queue}-secrets",
        "database_url": make_url(settings.database_url).set(password=secrets["db"])
        .render_as_string(hide_password=False),
        "broker_url": redis_url, "redis_url": redis_url,
    })
    proc = WorkerProcess(s, artifacts / f"worker-{settings.fleet}-secrets.log",
                         AIRLOCK_FLOWER_PASSWORD=secrets["flower"], AIRLOCK_API_TOKEN=secrets["api"],
                         AIRLOCK_FLOWER_BASIC_AUTH=f"admin:{secrets['flower']}").start()
    client = Airlock(s)
    # A tenant's job secret, which the hunting job names: the one secret it may find.
    store = SecretStore(client.store.engine, SecretBox.from_settings(s))
    secrets["injected"] = f"{MARK}-injected-{tag}"
    store.set("default", "HUNT_SECRET", secrets["injected"])
    try:
        yield client, secrets
    finally:
        store.delete("default", "HUNT_SECRET")
        client.close()
        proc.stop()


HUNT = r"""
import json, os, re, subprocess
with open("/workspace/put-by-the-job.txt", "w") as f:  # where the job itself puts its secret
    f.write(os.environ["HUNT_SECRET"])
mark = "airlockfake" + "secret"
token = re.compile((mark + r"[-a-z0-9]*").encode())
found = {}
def scan(path, data):
    for hit in set(token.findall(data)):
        found.setdefault(hit.decode(), []).append(path)
for name in os.listdir("/proc"):
    if name.isdigit() or name == "self":
        for part in ("environ", "cmdline", "mountinfo"):
            try:
                scan(f"/proc/{name}/{part}", open(f"/proc/{name}/{part}", "rb").read())
            except OSError:
                pass
grep = subprocess.run(["grep", "-rIaoE", "--exclude-dir=proc", "--exclude-dir=sys",
                       mark + "[-a-z0-9]*", "/"], capture_output=True)
for line in grep.stdout.splitlines():
    path, _, hit = line.rpartition(b":")
    found.setdefault(hit.decode(), []).append(path.decode())
urls = subprocess.run(["grep", "-rIaoE", "--exclude-dir=proc", "--exclude-dir=sys",
                       r"(postgres(ql)?(\+psycopg)?|redis|amqp)://[^ '\"]*@", "/"],
                      capture_output=True).stdout.decode().splitlines()
# The agent image's SDK dependencies document URLs with example credentials (user:pass@).
urls = [u for u in urls if not u.startswith("/opt/agent/lib/")]
airlock_env, unreadable = set(), []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        entries = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError as exc:
        unreadable.append(f"{pid}: {exc.strerror}")  # PID 1, the launcher, is not dumpable
        continue
    airlock_env |= {e.split(b"=")[0].decode() for e in entries if e.startswith(b"AIRLOCK")}
print(json.dumps({"found": found, "urls_with_credentials": urls, "airlock_env": sorted(airlock_env),
                  "env": sorted(os.environ), "unreadable": unreadable}))
"""


def test_a29_secret_hunt_finds_no_broker_database_flower_or_api_credential(
        attack: Attack, secret_worker: tuple[Airlock, dict[str, str]]) -> None:
    client, secrets = secret_worker
    control = f"{MARK}-control-{uuid.uuid4().hex[:8]}"  # the job's own env: the hunt must see it
    record = client.submit(code=HUNT, env={"HUNT_CONTROL": control}, secrets=["HUNT_SECRET"],
                           limits={"timeout_s": 60}).wait(120)

    assert record.verdict == "ok", record.summary() + record.stderr[-2000:]
    got = json.loads(record.stdout)
    assert control in got["found"], got  # the hunt works: it finds a value that is there
    assert any(p.endswith("/environ") for p in got["found"][control])
    # The injected secret: only where the job itself put it (its environment, its file), never
    # in a command line, a mount, a file of Airlock's (the FIFOs, the settings) or PID 1.
    put = "/workspace/put-by-the-job.txt"
    injected = got["found"].get(secrets["injected"], [])
    assert put in injected and any(p.endswith("/environ") for p in injected), got
    assert all(p == put or (p.endswith("/environ") and p != "/proc/1/environ")
               for p in injected), injected
    leaked = {k: v for k, v in got["found"].items() if k not in (control, secrets["injected"])}
    credentials = {v for k, v in secrets.items() if k != "injected"}
    assert not leaked and not credentials & set(got["found"]), leaked
    assert got["urls_with_credentials"] == [] and got["airlock_env"] == [], got
    assert got["unreadable"] == ["1: Permission denied"], got  # only the launcher's
    inner = set(inner_sandbox.ENV) if AGENT_RUN else set()
    assert set(got["env"]) == {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
                               "TMPDIR", "HUNT_CONTROL", "HUNT_SECRET"} | inner, got["env"]
    attack.record("A29", "a job on a worker whose database, Redis, Flower and API credentials "
                  "are fake secrets, given a tenant's secret it names: read every "
                  "/proc/*/environ, cmdline and mountinfo, grep all of / for the secrets and for "
                  "URLs with credentials, list AIRLOCK_* variables",
                  "no credential of Airlock's found; the injected secret only where the job put "
                  "it (its processes' environ, the file it wrote), never in a cmdline, mount, "
                  "Airlock's files or PID 1; the positive control (a value in the job's own "
                  "environment) is found, so the hunt could have failed; the job's environment "
                  "is the 6 fixed variables plus its own", record,
                  files_and_procs_searched="/ (minus /proc, /sys), /proc/*/environ|cmdline|mountinfo",
                  injected_secret_found_in=sorted({p if p == put else "/proc/<job pid>/environ"
                                                   for p in injected}))


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"image": "alpine:latest"}, "image"),
    ({"profile": "my-own-image"}, "profile"),
    ({"working_dir": "/proc/self/fd/7"}, "working_dir"),  # the CVE-2024-21626 shape
    ({"cwd": "/"}, "cwd"),
    ({"workdir": "/"}, "workdir"),
    ({"runtime": "runc"}, "runtime"),
    ({"runtime_path": "/usr/sbin/runc"}, "runtime_path"),
    ({"privileged": True}, "privileged"),
    ({"user": "0:0"}, "user"),
    ({"volumes": ["/:/host"]}, "volumes"),
    ({"network": "host"}, "network"),
    ({"files": {"../../etc/cron.d/x": "x"}}, "files.../../etc/cron.d/x"),
    ({"files": {"/etc/passwd": "x"}}, "files./etc/passwd"),
    ({"env": {"AIRLOCK_DATABASE_URL": "x"}}, "env.AIRLOCK_DATABASE_URL"),
    ({"env": {"HTTPS_PROXY": "http://evil"}}, "env.HTTPS_PROXY"),
    ({"limits": {"memory_bytes": 1 << 40}}, "limits.memory_bytes"),
    ({"limits": {"pids": 1 << 20}}, "limits.pids"),
    ({"limits": {"disk_bytes": 1 << 45}}, "limits.disk_bytes"),
]


def test_a32_the_api_refuses_images_working_dirs_runtimes_and_limits_it_does_not_allow(
        attack: Attack, client: Airlock, settings: Settings) -> None:
    before = job_count(settings.database_url)
    fields = []
    for extra, field in REFUSED:
        with pytest.raises(JobSpecError) as refused:
            client.submit({"code": "print(1)", **extra})
        assert refused.value.field == field, (extra, str(refused.value))
        fields.append(field)

    assert job_count(settings.database_url) == before  # refused before anything was recorded or queued
    attack.record("A32", "submit jobs naming their own image, an unknown profile, a working dir "
                  "(/proc/self/fd/7), a runtime or runtime path, privileged, user 0, volumes, "
                  "host network, files outside /workspace, AIRLOCK_/proxy env, limits beyond "
                  "the maximums", f"all {len(REFUSED)} refused with JobSpecError naming the "
                  "field, before anything was stored or queued; images come only from the "
                  "allowlisted profiles, the working dir and runtime are fixed by the worker",
                  None, verdict="refused", refused_fields=fields)


def test_a32_the_host_check_reports_docker_and_runc_against_known_escapes(
        attack: Attack, settings: Settings, worker: WorkerProcess) -> None:
    runtime = preflight.runtime_check(settings)

    engine_line, runc_line = runtime["docker engine"], runtime["runc"]
    assert engine_line.startswith("ok: Docker 20.10.24"), engine_line
    # runc 1.1.5 predates the CVE-2024-21626 fix (1.1.12); Debian's 1.1.5+ds1-1+deb12u1
    # says it backported it: reported as a warning, never as ok.
    assert runc_line.startswith("warn: runc 1.1.5"), runc_line
    assert "CVE-2024-21626" in runc_line
    assert preflight.judge_runtime("fail", "x", "refuse") == "refuse: x"
    assert preflight.judge_runtime("fail", "x", "warn") == "warn: x"
    assert f"airlock worker: runc: {runc_line}" in worker.log()  # said at the worker's start
    attack.record("A32", "host check at worker start (and airlock doctor): Docker and runc "
                  "versions against known container escapes", f"{engine_line}; {runc_line}; "
                  "runtime_cve_policy=warn starts with a warning, refuse refuses an unpatched "
                  "known escape", None, verdict="warn")
