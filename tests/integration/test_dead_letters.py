"""The dead-letter lists on the real Redis: bounded, and shown by ``airlock dead-letters`` with
every byte of an item escaped (ATTACKS.md F19). A queue name of the test's own."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from config.settings import Settings
from tasks import deadletters
from tasks.deadletters import KEEP, PAYLOAD_BYTES, DeadLetter, dead_key
from tests.services import ROOT, worker_env

pytestmark = [pytest.mark.integration]


@pytest.fixture
def queue() -> Iterator[tuple[Settings, redis.Redis, str]]:
    s = Settings(queue=f"airlock-dead-{uuid.uuid4().hex[:8]}")
    r = redis.Redis.from_url(s.broker_url)
    yield s, r, s.queue
    r.delete(dead_key(s.queue))
    r.close()


def test_a_list_keeps_its_newest_items_only(queue: tuple[Settings, redis.Redis, str]) -> None:
    _, r, name = queue
    for i in range(KEEP + 5):
        deadletters.keep(r, DeadLetter.of(name, b"item %d" % i, "not JSON", time.time()))
    kept = deadletters.dead_letters(r, name)
    assert r.llen(dead_key(name)) == len(kept) == KEEP
    assert [k.payload for k in (kept[0], kept[-1]) if k] == [b"item %d" % (KEEP + 4), b"item 5"]


def test_the_command_shows_each_item_escaped(queue: tuple[Settings, redis.Redis, str]) -> None:
    s, r, name = queue
    big = b"\x1b]52;c;Y2xpcGJvYXJk\x07\x1b[8m" + b"\xff" * (PAYLOAD_BYTES + 1)
    deadletters.keep(r, DeadLetter.of(name, b"not json", "not JSON (JSONDecodeError: ...)", 1e9))
    deadletters.keep(r, DeadLetter.of(name, big, "not JSON (JSONDecodeError: ...)", 2e9))
    r.lpush(dead_key(name), b"\x1b[2J written by someone else")

    def airlock(*args: str) -> bytes:
        done = subprocess.run([sys.executable, "-m", "airlock.cli", "dead-letters", "--queue", name,
                               *args], cwd=ROOT, env=worker_env(s), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = airlock()
    assert all(0x20 <= b < 0x7f for b in shown.replace(b"\n", b"")), shown
    lines = shown.decode().splitlines()
    assert lines[0] == f"{name}: 3 set aside, newest first"
    assert lines[1] == "  (not an entry of Airlock's)"
    assert lines[2].startswith("  2033-05-18 03:33:20Z  not JSON (JSONDecodeError: ...)  "
                               f"{len(big)} B  \\x1b]52;c;Y2xpcGJvYXJk\\x07\\x1b[8m\\xff")
    assert lines[3] == "  2001-09-09 01:46:40Z  not JSON (JSONDecodeError: ...)  8 B  not json"

    [listed] = json.loads(airlock("--json"))
    assert (listed["queue"], listed["count"], listed["items"][0]) == (name, 3, None)
    newest = listed["items"][1]
    assert (newest["size"], newest["truncated"]) == (len(big), True)
    assert base64.b64decode(newest["payload_b64"]) == big[:PAYLOAD_BYTES]
