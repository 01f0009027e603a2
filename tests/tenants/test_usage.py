"""Usage (issue 22): two tenants' jobs of different verdicts, counted per tenant and day by
the trigger on each job's end; the same figures from `airlock usage --json`, from GET
/v1/usage (a tenant's key sees its own, an admin's all), and in a worker's Prometheus
endpoint with the tenant label."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from tasks.keys import Scope
from tasks.tenancy import TenantStore
from tests.faults.rig import Fleet, env_for, wait_for
from tests.services import ROOT, ApiProcess, free_port
from tests.tenants.conftest import TenantClient

pytestmark = [pytest.mark.integration, pytest.mark.tenants]


def test_usage_per_tenant_and_day_everywhere(tenant_fleet: Fleet, tenant_client: TenantClient,
                                             tenant_logs: Path) -> None:
    metrics_port = free_port()
    tenant_fleet.worker(metrics_port=metrics_port)
    a, b = tenant_client("usage-a"), tenant_client("usage-b")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    records = [a.submit(code=burn).wait(60), a.submit(code="import sys; sys.exit(2)").wait(60),
               a.submit(code="import time; time.sleep(5)", limits={"timeout_s": 1}).wait(60),
               b.submit(code="print(1)").wait(60)]
    assert [r.verdict for r in records] == ["ok", "nonzero_exit", "timeout", "ok"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env |= env_for(tenant_fleet.settings)
    shown = subprocess.run([sys.executable, "-m", "airlock.cli", "usage", "--json"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    by_tenant = {u["tenant"]: u for u in map(json.loads, shown.stdout.splitlines())}
    ua, ub = by_tenant["usage-a"], by_tenant["usage-b"]
    assert ua["by_verdict"] == {"ok": 1, "nonzero_exit": 1, "timeout": 1} and ua["jobs"] == 3
    assert ub["by_verdict"] == {"ok": 1}
    cpu_a = sum(r.cpu_ms or 0 for r in records[:3]) / 1000
    assert ua["cpu_s"] == pytest.approx(cpu_a, abs=0.01) and ua["cpu_s"] >= 0.5
    assert ua["wall_s"] == pytest.approx(sum(r.wall_ms or 0 for r in records[:3]) / 1000, abs=0.01)
    assert ua["peak_memory_gib_s"] > 0

    secret = secrets.token_hex(32)
    store = TenantStore(tenant_fleet.db)
    own = store.create_key("usage-a", Scope.READ, secret.encode()).token
    admin = store.create_key("usage-b", Scope.ADMIN, secret.encode()).token
    api = ApiProcess(tenant_fleet.settings.but(api_key_secret=secret),
                     tenant_logs / "api-usage.log").start()
    try:
        with httpx.Client(base_url=api.url, timeout=30) as h:
            mine = h.get("/v1/usage", headers={"Authorization": f"Bearer {own}"})
            theirs = h.get("/v1/usage", params={"tenant": "usage-b"},
                           headers={"Authorization": f"Bearer {own}"})
            every = h.get("/v1/usage", headers={"Authorization": f"Bearer {admin}"})
    finally:
        api.stop()
    assert mine.status_code == 200 and [u["tenant"] for u in mine.json()["usage"]] == ["usage-a"]
    assert mine.json()["usage"][0] == ua
    assert theirs.status_code == 403
    assert {u["tenant"] for u in every.json()["usage"]} == {"usage-a", "usage-b"}

    def scraped() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    wait_for("the tenants' usage in the worker's metrics",
             lambda: 'airlock_tenant_usage_today{kind="jobs",tenant="usage-a"} 3.0' in scraped(),
             30)
    assert 'airlock_tenant_usage_today{kind="jobs",tenant="usage-b"} 1.0' in scraped()
    assert 'airlock_tenant_jobs{state="waiting",tenant="usage-a"} 0.0' in scraped()
