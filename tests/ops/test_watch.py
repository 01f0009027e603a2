"""Watching a fleet: the alert rules and the Grafana dashboard in deploy/ are valid PromQL
(promtool, Debian's prometheus package), each alert fires on what it should (promtool's rule
tests), and every metric they name is exported by a running worker, with bounded labels."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from airlock.client import Airlock
from config.settings import Settings
from tests.services import ROOT, WorkerProcess

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "airlock-fleet.json"
METRIC = re.compile(r"\bairlock_[a-z_]+\b")
MAX_SERIES = 64  # per metric of one worker (a histogram's buckets aside): Airlock's own words


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_the_alert_rules_pass_promtool_and_their_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each panel's query becomes a recording rule, with
    # Grafana's interval variable given a value.
    rules = [{"record": f"airlock:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, expr in enumerate(dashboard_expressions())]
    assert len(rules) >= 15
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_covers_what_ops_watch() -> None:
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("verdict", "queue wait", "phases", "pool", "containers", "reaper", "per host"):
        assert topic in titles, topic


def _scrape(port: int) -> dict[str, list[dict[str, str]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(sample.labels)
    return series


@pytest.mark.integration
def test_every_metric_the_rules_and_dashboard_name_is_exported_by_a_running_worker(
        ops_worker: WorkerProcess, ops_client: Airlock, ops_settings: Settings) -> None:
    port = ops_settings.metrics.port
    assert port is not None
    assert ops_client.submit(code="print('watched')").wait(60).verdict == "ok"
    named = {m for expr in rule_expressions() + dashboard_expressions() for m in METRIC.findall(expr)}
    deadline = time.monotonic() + 20  # the housekeeping pass sets the gauges (every 2 s here)
    while True:
        exported = _scrape(port)
        missing = sorted(named - exported.keys())
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"named by deploy/ but not exported by a worker: {missing}"
    assert {"airlock_heartbeat_timestamp_seconds", "airlock_disk_bytes",
            "airlock_redis_memory_bytes", "airlock_queue_length"} <= named
    series = {name: {tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                     for labels in found} for name, found in exported.items()}
    crowded = {name: len(sets) for name, sets in series.items()
               if name.startswith("airlock_") and len(sets) > MAX_SERIES}
    assert not crowded, crowded
    info = exported["airlock_worker_info"]
    assert len(info) == 1 and info[0]["host"] == ops_settings.hostname
