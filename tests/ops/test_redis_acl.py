"""The broker's users of docs/operations.md, exactly as written there, on a redis-server of the
test's own with the default user off: a worker and Flower with ``airlock-worker``, the client
and the CLI with ``airlock-client``, through what each does (jobs with live output, a cancel,
a message lost and sent again by the reconciler, a poison item set aside, the dead-letter
listing, the doctor's Redis check, Flower's events and remote control, a cold shutdown handing
a running job's message back). No command of theirs
is refused; each user is refused what is not on its line."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests

from airlock.doctor import Status, check_redis
from config.settings import Settings
from tests.faults.rig import Fleet, RedisServer, fleet_for, wait_for
from tests.ops.conftest import FLOWER_PASSWORD, FLOWER_USER, free_port, start_flower, wait_http
from tests.services import ROOT, worker_env

pytestmark = [pytest.mark.integration]
MARK = "<!-- The block below is read, as written, by tests/ops/test_redis_acl.py. -->"
ADMIN = "acl-test-admin"  # the test's own user, to play the broker losing a message


def documented_users() -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split(MARK, 1)[1].split("```")[1]
    return [line for line in block.splitlines() if line.startswith("user ")]


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.passwords = {name: secrets.token_urlsafe(12)
                          for name in ("WORKER_PASSWORD", "CLIENT_PASSWORD", "ADMIN")}
        lines = [*documented_users(), f"user {ADMIN} on >{self.passwords['ADMIN']} ~* &* +@all"]
        text = "\n".join(lines) + "\n"
        for name, password in self.passwords.items():
            text = text.replace(f">{name} ", f">{password} ")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "users.acl").write_text(text)
        self.server = RedisServer(workdir, appendonly=False,  # memory bounded as compose does
                                  args=("--aclfile", str(workdir / "users.acl"), "--maxmemory",
                                        "256mb", "--maxmemory-policy", "volatile-lru"),
                                  login=(ADMIN, self.passwords["ADMIN"]))

    def url(self, user: str) -> str:
        password = self.passwords[f"{user.removeprefix('airlock-').upper()}_PASSWORD"]
        return f"redis://{user}:{quote(password)}@127.0.0.1:{self.server.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user) if user != ADMIN else
                                    f"redis://{ADMIN}:{self.passwords['ADMIN']}@127.0.0.1:"
                                    f"{self.server.port}/0")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "redis")
    b.server.start()
    yield b
    b.server.stop()


@pytest.fixture
def fleet(broker: Broker, artifacts: Path) -> Iterator[Fleet]:
    logs = artifacts / "faults"
    logs.mkdir(parents=True, exist_ok=True)
    # Headroom: a job's message is sent before any worker runs (the client's role, tested).
    base = Settings(concurrency=1, reaper_interval_s=1.0, reconcile_after_s=2.0, pool_size=0,
                    admission_headroom=10)
    client_url = broker.url("airlock-client")
    # The queue is "airlock", as the documented key patterns say: this Redis is the test's alone.
    with fleet_for(base, logs, broker_url=client_url, redis_url=client_url, queue="airlock") as f:
        yield f


def test_each_role_works_with_only_its_documented_user(broker: Broker, fleet: Fleet) -> None:
    queue, admin = fleet.settings.queue, broker.client(ADMIN)
    # The client sends a job's message itself (a refused send would be left to the reconciler).
    first = fleet.submit("print('hello')")
    assert admin.llen(queue) == 1
    worker_url = broker.url("airlock-worker")
    w = fleet.worker(broker_url=worker_url, redis_url=worker_url)

    # A job with live output, and a cancel.
    done = fleet.wait(first, 60)
    assert (done.verdict, done.stdout) == ("ok", "hello\n")
    assert [e.kind for e in fleet.client.events(done.id, follow=False)][-1] == "end"
    running = fleet.submit("import time; time.sleep(60)")
    fleet.running_container(running)
    assert fleet.client.cancel(running) == "cancelling"
    assert fleet.wait(running, 60).verdict == "cancelled"

    # A message the broker lost: the worker's reconciler sends it again.
    blocker = fleet.submit("import time; time.sleep(2)")
    fleet.running_container(blocker)
    lost = fleet.submit("print('sent again')")
    assert admin.delete(queue) == 1
    assert fleet.wait(lost, 60).stdout == "sent again\n"

    # The client user can push anything onto the queue; the worker sets it aside.
    fleet.client.redis.lpush(queue, b"not json")
    wait_for("the poison item set aside", lambda: admin.llen(f"airlock:dead:{queue}"), 30)
    after = fleet.wait(fleet.submit("print('after')"), 60)
    assert after.verdict == "ok" and w.proc is not None and w.proc.poll() is None
    listed = subprocess.run([sys.executable, "-m", "airlock.cli", "dead-letters", "--json"],
                            cwd=ROOT, env=worker_env(fleet.settings), capture_output=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["items"][0]["preview"] == "not json"
    assert check_redis(fleet.settings.redis_url).status == Status.OK

    # Flower with the worker's user: the workers' events, and their answers to its questions.
    port = free_port()
    flower = start_flower(fleet.settings.but(broker_url=worker_url, redis_url=worker_url),
                          fleet.logs / f"{fleet.settings.fleet}-flower.log", port,
                          AIRLOCK_FLOWER_USER=FLOWER_USER, AIRLOCK_FLOWER_PASSWORD=FLOWER_PASSWORD)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", flower)
        api, auth = f"http://127.0.0.1:{port}/api", (FLOWER_USER, FLOWER_PASSWORD)

        def flower_knows() -> bool:  # it sees only what happens after its receiver connected
            job = fleet.wait(fleet.submit("print('watched')"), 60).id
            for _ in range(10):
                workers = requests.get(f"{api}/workers?refresh=1", auth=auth, timeout=10).json()
                tasks = requests.get(f"{api}/tasks", auth=auth, timeout=10).text
                if any(name.startswith("airlock@") for name in workers) and job in tasks:
                    return True
                time.sleep(0.5)
            return False
        wait_for("Flower to see the worker and a job", flower_knows, 60, 0)
    finally:
        flower.terminate()
        flower.wait(15)

    # A cold shutdown mid-job hands its message back to the queue.
    held = fleet.submit("import time; time.sleep(60)")
    fleet.running_container(held)
    w.stop(signal.SIGQUIT)
    assert w.proc is not None and w.proc.poll() is not None
    assert admin.llen(queue) == 1 and admin.hlen("unacked") == 0 and held.encode() in admin.lindex(queue, 0)

    # Nothing either role did was refused.
    for log in (w.log(), (fleet.logs / f"{fleet.settings.fleet}-flower.log").read_text()):
        refused = re.findall(r".*(?:NOPERM|NOAUTH|no permissions|invalid username).*", log)
        assert not refused, refused[:3]
    refused_everywhere(broker, queue)


def refused_everywhere(broker: Broker, queue: str) -> None:
    """What no user of Airlock's may do, and what the client may not do that the worker may."""
    for user in ("airlock-worker", "airlock-client"):
        r = broker.client(user)
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"),
                        ("CONFIG", "SET", "appendonly", "no"), ("REPLICAOF", "127.0.0.1", "1"),
                        ("ACL", "LIST"), ("SHUTDOWN",), ("SET", "not-airlocks", "x"),
                        ("MODULE", "LIST"), ("SCRIPT", "FLUSH"), ("CLIENT", "KILL", "ID", "1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command(*command)
        r.close()
    client = broker.client("airlock-client")
    for command in (("DEL", queue), ("BRPOP", queue, "1"), ("HSET", "unacked", "t", "x"),
                    ("PUBLISH", "/0.celery.pidbox", "x"), ("HGETALL", "unacked"),
                    ("LPUSH", f"airlock:dead:{queue}", "forged"), ("SET", "airlock:lock:reconcile", "x"),
                    ("LPUSH", "celery", "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=broker.server.port).ping()  # the default user is off
    assert broker.client("airlock-worker").ping()  # the server still answers its users
