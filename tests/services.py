"""Real services for the tests: a throwaway database, a worker process, and checks.

Integration tests never skip: with CI=true a missing Docker engine, Redis or PostgreSQL fails
the run (set-up is .ci/run's job, through scripts/setup-host.sh).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import psutil
import sqlalchemy as sa

from config.settings import Settings
from tasks.migrate import upgrade
from workers import labels as L

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("AIRLOCK_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(prefix: str = "airlock_t", revision: str = "head") -> Iterator[str]:
    """A fresh database with the schema applied (up to ``revision``); dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url, revision)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def job_count(database_url: str) -> int:
    """Rows in the jobs table: what a refused job must not add."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
    finally:
        engine.dispose()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env.update({
        "AIRLOCK_DATABASE_URL": settings.database_url,
        "AIRLOCK_BROKER_URL": settings.broker_url,
        "AIRLOCK_REDIS_URL": settings.redis_url,
        "AIRLOCK_FLEET": settings.fleet,
        "AIRLOCK_QUEUE": settings.queue,
        "AIRLOCK_STORAGE": settings.storage,
        "AIRLOCK_CONCURRENCY": str(settings.concurrency),
        "AIRLOCK_REAPER_INTERVAL_S": str(settings.upkeep.reaper_interval_s),
        "AIRLOCK_POOL_SIZE": str(settings.pool.size),
        "AIRLOCK_POOL_PROFILES": json.dumps(list(settings.pool.profiles)),
        "AIRLOCK_PROFILES": json.dumps({name: p.model_dump(mode="json")
                                        for name, p in settings.profiles.items()}),
        "AIRLOCK_RUNTIME": settings.runtime,
        "AIRLOCK_CPUSET": settings.sandbox.cpuset,
        "AIRLOCK_LAUNCHER_PATH": settings.sandbox.launcher_path,
    })
    if settings.docker_host:
        env["AIRLOCK_DOCKER_HOST"] = settings.docker_host
    if settings.secrets.key is not None:
        env["AIRLOCK_SECRETS_KEY"] = settings.secrets.key.get_secret_value()
    env.update(extra)
    return env


class WorkerProcess:
    """``airlock worker`` as a real subprocess, with its log kept for the test report."""

    def __init__(self, settings: Settings, log_path: Path, *, args: tuple[str, ...] = (),
                 **extra_env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.args = args  # extra ``celery worker`` options, e.g. --prefetch-multiplier=2
        self.env = worker_env(settings, **extra_env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start (or restart) the worker and wait until it says it is ready."""
        seen = len(self.log())  # a restart appends to the same log: look past the old lines
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airlock.cli", "worker", *self.args], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log()[seen:]:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pool_pids(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.pid).children()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the main process only (its pool children are left as they would be)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ApiProcess:
    """``airlock api`` as a real subprocess (uvicorn), serving on a free loopback port."""

    def __init__(self, settings: Settings, log_path: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = worker_env(settings, **extra_env)
        assert settings.api.key_secret is not None
        self.env["AIRLOCK_API_KEY_SECRET"] = settings.api.key_secret.get_secret_value()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ApiProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airlock.cli", "api", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"api exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"api not up in {timeout}s: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def tree_rss(pid: int, children: bool = True) -> int:
    """The RSS of a process and (with ``children``) all its descendants, together."""
    main = psutil.Process(pid)
    total = 0
    for p in [main, *(main.children(recursive=True) if children else [])]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def airlock_containers(fleet: str, base_url: str | None = None) -> list[dict[str, object]]:
    client = docker.APIClient(base_url=base_url or "unix:///var/run/docker.sock", version="auto")
    try:
        found: list[dict[str, object]] = client.containers(
            all=True, filters={"label": [f"{L.MANAGED}=true", f"{L.FLEET}={fleet}"]})
        return found
    finally:
        client.close()


def wait_gone(path: Path, timeout: float = 3.0) -> bool:
    """Wait until nothing is at ``path`` (a job's storage goes with its container, just after
    its result); whether it went. Never follows a link."""
    deadline = time.monotonic() + timeout
    while os.path.lexists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_no_containers(fleet: str, timeout: float = 10.0, base_url: str | None = None,
                       roles: tuple[str, ...] = (L.ROLE_JOB,)) -> list[dict[str, object]]:
    """Wait until no job container of the fleet remains; return what is left (ideally [])."""
    deadline = time.monotonic() + timeout
    while True:
        left = [c for c in airlock_containers(fleet, base_url)
                if (c.get("Labels") or {}).get(L.ROLE) in roles  # type: ignore[union-attr]
                or (c.get("Labels") or {}).get(L.JOB)]  # type: ignore[union-attr]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)
