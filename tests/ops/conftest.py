"""Fixtures of the operations tests: a worker of their own, with metrics on and JSON logs.

The ops worker consumes a queue and owns a fleet of its own (the session's with "-ops"), so a
session that also runs the shared ``worker`` fixture never hands it the other's jobs, and its
Celery node name (airlock@ops-…) tells it apart in Flower from every other worker on this
Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock.client import Airlock
from config.settings import Settings
from tests.services import ROOT, WorkerProcess, worker_env

FLOWER_USER = "ops"
FLOWER_PASSWORD = "flower-test-password"  # a test value, never a real secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def ops_settings(settings: Settings) -> Settings:
    tag = settings.fleet.removeprefix("test-")
    return settings.but(**{
        "fleet": f"{settings.fleet}-ops", "queue": f"{settings.queue}-ops",
        "hostname": f"ops-{tag}", "reaper_interval_s": 2.0, "concurrency": 1,
        "metrics_port": free_port(),
    })


@pytest.fixture(scope="session")
def ops_worker(ops_settings: Settings, artifacts: Path) -> Iterator[WorkerProcess]:
    s = ops_settings
    proc = WorkerProcess(
        s, artifacts / f"worker-{s.fleet}.log",
        AIRLOCK_HOSTNAME=s.hostname, AIRLOCK_METRICS_PORT=str(s.metrics.port),
        AIRLOCK_LOG_FORMAT="json", AIRLOCK_HEALTH_FILE=str(artifacts / f"{s.fleet}.alive"),
        AIRLOCK_REAPER_INTERVAL_S=str(s.upkeep.reaper_interval_s),
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ops_client(ops_settings: Settings) -> Iterator[Airlock]:
    c = Airlock(ops_settings)
    yield c
    c.close()


@dataclass
class FlowerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_flower(s: Settings, log_path: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "airlock.cli", "flower", "--port", str(port)], cwd=ROOT,
            env=worker_env(s, **env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


@pytest.fixture(scope="session")
def flower(ops_settings: Settings, ops_worker: WorkerProcess,
           artifacts: Path) -> Iterator[FlowerProcess]:
    port = free_port()
    log_path = artifacts / f"flower-{ops_settings.fleet}.log"
    proc = start_flower(ops_settings, log_path, port, AIRLOCK_FLOWER_USER=FLOWER_USER,
                        AIRLOCK_FLOWER_PASSWORD=FLOWER_PASSWORD)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", proc)
        yield FlowerProcess(proc, port, log_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(15)
