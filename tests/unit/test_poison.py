"""What a worker refuses from the broker, and what it keeps of it (ATTACKS.md F19): the checks of
tasks.broker and tasks.consumer on each kind of poison item, with real kombu messages built on
kombu's in-memory transport; the dead-letter entries of tasks.deadletters; the transport's
configuration. No services."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection
from kombu.serialization import prepare_accept_content

from config.settings import Settings
from tasks import deadletters
from tasks.app import broker_transport, celery_config
from tasks.broker import envelope_problem, parsed, unacked_problem
from tasks.consumer import task_problem
from tasks.deadletters import DeadLetter, escaped
from tests.poison import Poison, poisons, task_message

QUEUE = "airlock"
JOB = "6f1c2d44-1111-4222-8333-444455556666"
# What the client sent for a job, as kombu's Redis transport wrote it onto the queue list.
SENT = (b'{"body": "W1siNmYxYzJkNDQtMTExMS00MjIyLTgzMzMtNDQ0NDU1NTU2NjY2Il0sIHt9LCB7ImNhbGxiYWNrc'
        b'yI6IG51bGwsICJlcnJiYWNrcyI6IG51bGwsICJjaGFpbiI6IG51bGwsICJjaG9yZCI6IG51bGx9XQ==", "con'
        b'tent-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", '
        b'"task": "airlock.run_job", "id": "fb979ecb-e3ad-475a-b5e5-5446015686e7", "shadow": nul'
        b'l, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "time'
        b'limit": [null, null], "root_id": "fb979ecb-e3ad-475a-b5e5-5446015686e7", "parent_id": n'
        b'ull, "argsrepr": "(\'6f1c2d44-1111-4222-8333-444455556666\') python: x", "kwargsrepr": "'
        b'{}", "origin": "gen8993@vm", "ignore_result": null, "replaced_task_nesting": 0, "stampe'
        b'd_headers": null, "stamps": {}}, "properties": {"correlation_id": "fb979ecb-e3ad-475a-b'
        b'5e5-5446015686e7", "reply_to": "6692f56d-6cf8-3c6b-91c9-face4889e474", "argsrepr": "(\''
        b'6f1c2d44-1111-4222-8333-444455556666\') python: x", "delivery_mode": 2, "delivery_info":'
        b' {"exchange": "", "routing_key": "airlock-probe-xyz"}, "priority": 0, "body_encoding": '
        b'"base64", "delivery_tag": "1d015543-50c9-4d38-9907-fd76255be83e"}}')
KINDS = poisons(QUEUE)


@pytest.fixture(scope="module")
def channel() -> Iterator[Any]:
    with Connection("memory://") as conn:
        yield conn.default_channel


def message(channel: Any, raw: bytes) -> Any:
    """The kombu message a worker's consumer gets for ``raw``, accepting JSON as the app does."""
    built = channel.Message(parsed(raw), channel=channel)
    built.accept = prepare_accept_content(["json"])
    return built


def test_a_job_as_the_client_sends_it_passes_both_checks(channel: Any) -> None:
    assert envelope_problem(SENT) is None
    assert task_problem(message(channel, SENT)) is None
    assert envelope_problem(task_message(QUEUE, [JOB])) is None  # the catalogue's own baseline
    assert task_problem(message(channel, task_message(QUEUE, [JOB]))) is None


@pytest.mark.parametrize("poison", KINDS, ids=[p.name for p in KINDS])
def test_each_kind_is_refused_where_it_should_be_with_its_reason(channel: Any, poison: Poison) -> None:
    problem = envelope_problem(poison.raw)
    if poison.stage == "transport":
        assert problem is not None and poison.reason in problem, problem
        return
    assert problem is None  # kombu can build it: the consumer judges it
    if poison.stage == "consumer":
        problem = task_problem(message(channel, poison.raw))
        assert problem is not None and poison.reason in problem, problem
    # else Celery's own checks refuse it (an ETA that is no date, a body that is no UTF-8 text),
    # through the consumer's on_invalid_task and on_decode_error, which keep it


def test_reasons_show_no_raw_byte_of_the_item() -> None:
    reasons = [envelope_problem(p.raw) or "" for p in KINDS]
    reasons.append(envelope_problem(b'{"__type__": "\x1b]52;c;x\x07", "__value__": 1}') or "")
    assert all(r.isascii() and r.isprintable() for r in reasons), reasons


def test_an_unacknowledged_entry_kombu_cannot_restore() -> None:
    assert unacked_problem(json.dumps([json.loads(SENT), "", QUEUE]).encode()) is None
    assert "not JSON" in (unacked_problem(b"not json") or "")
    assert "not JSON" in (unacked_problem(b"[" * 100_000) or "")
    assert "[message, exchange, routing key]" in (unacked_problem(b'{"a": 1}') or "")
    assert "[message, exchange, routing key]" in (unacked_problem(b"[1, 2]") or "")


def test_a_dead_letter_keeps_when_where_why_and_a_capped_copy() -> None:
    raw = b"\x1b[8m" + b"x" * (deadletters.PAYLOAD_BYTES + 10)
    letter = DeadLetter.of(QUEUE, raw, "not JSON", at=1000.0)
    assert (letter.size, len(letter.payload), letter.truncated) == (len(raw), deadletters.PAYLOAD_BYTES,
                                                                   True)
    assert DeadLetter.from_json(letter.to_json()) == letter
    assert letter.preview().startswith("\\x1b[8mxxx") and letter.preview().endswith("...")
    assert len(letter.preview()) == len("\\x1b[8m") + deadletters.PREVIEW_BYTES - 4 + len("...")
    for junk in (b"not json", b"[]", b'{"at": 1}', b'{"at": "x", "queue": 1, "reason": 2, "size": 3,'
                 b' "payload_b64": "@@"}', b"[" * 100_000):
        assert DeadLetter.from_json(junk) is None


def test_escaped_is_printable_ascii_and_says_where_it_was_cut() -> None:
    assert escaped(b"ok \\ \x00\x1b]0;title\x07\r\n\xff") == "ok \\\\ \\x00\\x1b]0;title\\x07\\x0d\\x0a\\xff"
    assert escaped("é\u202e") == "\\xc3\\xa9\\xe2\\x80\\xae"
    assert escaped(b"abcdef", 3) == "abc..."
    assert escaped("\udcff") == "\\\\udcff"  # a lone surrogate, as Python writes it


def test_the_broker_transport_is_airlocks_for_redis_urls_and_keeps_tls() -> None:
    assert broker_transport("redis://:pw@redis:6379/0") == {"broker_transport": "tasks.broker:Transport"}
    assert broker_transport("rediss://redis:6380/0")["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert "broker_use_ssl" not in broker_transport("rediss://redis:6380/0?ssl_cert_reqs=required")
    # Sentinel too: the same screen over kombu's Sentinel channel (tasks/broker.py).
    assert broker_transport("sentinel://redis:26379")["broker_transport"] == \
        "tasks.broker:SentinelTransport"
    assert broker_transport("memory://") == {}  # not Redis: kombu's own


def test_a_rediss_connection_is_tls_with_the_certificate_verified() -> None:
    from celery import Celery

    for url, reqs in [("rediss://redis:6380/0", ssl.CERT_REQUIRED),
                      ("rediss://redis:6380/0?ssl_cert_reqs=none", ssl.CERT_NONE),
                      ("redis://redis:6379/0", None)]:
        app = Celery("t", set_as_current=False)
        app.conf.update(celery_config(Settings(broker_url=url)))
        conn = app.connection_for_write()  # nothing connects until used
        assert conn.transport_cls == "tasks.broker:Transport"
        assert (conn.ssl or {}).get("ssl_cert_reqs") == reqs, (url, conn.ssl)
        assert type(conn.transport).__module__ == "tasks.broker"
