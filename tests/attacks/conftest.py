"""The attack suite's fixtures (ATTACKS.md A1-A34 without the network entries).

Every attack is submitted as a real job through the public path (``run_job``). ``attack``
then checks, for every test, what ATTACKS.md calls contained: the attack's container is gone
by the time its result is stored, a canary job right after it completes normally, and no
container of the fleet is left (``no_leftovers``). What each test measured is written to
``artifacts/attacks.json``; ``python -m tests.attacks.report`` turns that into docs/attacks.md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from config.settings import Settings
from tests.conftest import AGENT_RUN, RunJob
from tests.services import wait_no_containers

Records = dict[str, dict[str, Any]]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_PASSED] = report.passed


CALL_PASSED = pytest.StashKey[bool]()


def host_facts() -> dict[str, Any]:
    client = docker.APIClient(version="auto")
    try:
        version = client.version()
    finally:
        client.close()
    parts = {c.get("Name"): c for c in version.get("Components") or []}
    runc = parts.get("runc") or {}
    return {
        "docker": version.get("Version"), "kernel": platform.release(),
        "runc": f"{runc.get('Version')} ({(runc.get('Details') or {}).get('GitCommit')})",
        "cpus": len(os.sched_getaffinity(0)),
    }


def workspace_on_host(client: Airlock, job_id: str, timeout: float = 30) -> Path:
    """The host folder bound at the job's /workspace (from docker inspect, never docker exec)."""
    api = docker.APIClient(version="auto")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cid = client.result(job_id).container_id
            if cid:
                mounts = api.inspect_container(cid)["Mounts"]
                return Path(next(m["Source"] for m in mounts if m["Destination"] == "/workspace"))
            time.sleep(0.05)
    finally:
        api.close()
    raise AssertionError("the job never started")


@pytest.fixture(scope="session")
def attack_records(artifacts: Path) -> Iterator[Records]:
    records: Records = {}
    yield records
    # The run under the agent profile (AIRLOCK_TEST_PROFILES=agent) keeps its own figures.
    path = artifacts / ("attacks-agent.json" if AGENT_RUN else "attacks.json")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    merged = {**old.get("attacks", {}), **records}  # a partial run (-k) keeps the others
    defined = {m for f in Path(__file__).parent.glob("test_*.py")
               for m in re.findall(r"^def (test_\w+)", f.read_text(), re.MULTILINE)}
    merged = {k: v for k, v in merged.items() if k.split("[")[0] in defined}  # renamed tests
    path.write_text(json.dumps({
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_facts(), "attacks": dict(sorted(merged.items())),
    }, indent=2, sort_keys=False) + "\n")


@dataclass
class Attack:
    """One attack test: run jobs, assert, then ``record`` what was measured."""

    run_job: RunJob
    settings: Settings
    node_id: str
    entry: dict[str, Any] = field(default_factory=dict)

    def job(self, code: str | None = None, **fields: Any) -> JobRecord:
        """Submit and wait; the container must be gone within 3 s (it is removed just after
        the result is written)."""
        record = self.run_job(code, **fields)
        left = wait_no_containers(self.settings.fleet, timeout=3)
        assert not left, f"job container still there after its result: {[c['Id'] for c in left]}"
        return record

    def record(self, entry: str, attack: str, contained: str, record: JobRecord | None = None,
               *, row: str | None = None, **measured: Any) -> None:
        """What the attack was, how it ended, and the figures; ``row``: the security
        design's destructive-command table row this test stands for."""
        figures = {}
        if record is not None:
            figures = {"verdict": record.verdict, "exit_code": record.exit_code,
                       "wall_ms": record.wall_ms, "cpu_ms": record.cpu_ms,
                       "peak_memory_bytes": record.peak_memory_bytes}
            evidence = record.evidence or {}
            flags = [k for k in ("oom_killed", "timed_out", "output_exceeded", "pids_capped",
                                 "disk_full", "seccomp_killed") if evidence.get(k)]
            figures["flags"] = flags
            for key in ("pids_peak", "pids_max_events", "disk_used_bytes", "bytes_dropped"):
                if evidence.get(key):
                    figures[key] = evidence[key]
        self.entry.update({"entry": entry, "attack": attack, "contained": contained,
                           "row": row, **figures, **measured})


@pytest.fixture
def attack(request: pytest.FixtureRequest, no_leftovers: None, run_job: RunJob,
           canary: Callable[[], JobRecord], settings: Settings,
           attack_records: Records) -> Iterator[Attack]:
    """After the test: a canary job completes normally, then no container is left."""
    a = Attack(run_job, settings, request.node.nodeid)
    yield a
    t0 = time.monotonic()
    done = canary()
    if a.entry:
        a.entry["canary_s"] = round(time.monotonic() - t0, 2)
        a.entry["canary_wall_ms"] = done.wall_ms
        a.entry["passed"] = request.node.stash.get(CALL_PASSED, False)
        attack_records[request.node.name] = a.entry
