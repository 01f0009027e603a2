"""Airlock's broker transport: kombu's Redis transport, where an item the worker cannot take is
set aside instead of stopping it (ATTACKS.md F19).

kombu turns an item popped off a queue list into a message in one go (parse, build, file it as
unacknowledged), and whatever that raises leaves the worker's event loop: the main process
exits ("Unrecoverable error"), or, for a KeyError, which kombu counts as a lost connection,
reconnects and takes the same item again for ever. A bad entry in the unacknowledged hash
stops every worker at its start, when kombu restores it. Here the channel's Redis client
screens each popped item (BRPOP, RPOP) before kombu sees it, and the QoS each entry before
restoring it; one that cannot be taken goes to its dead-letter list (``tasks.deadletters``).
Celery's part (a message it cannot run) is ``tasks.consumer``.

Chosen with Celery's ``broker_transport`` for redis:// and rediss:// URLs, and in its Sentinel
form (``SentinelTransport``: the primary found through the Sentinels, and found again after a
failover) for sentinel:// URLs (``tasks.app``).
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from tasks import deadletters
from tasks.deadletters import DeadLetter, because, escaped

# The queue whose item kombu is delivering: Celery's handlers run inside the delivery.
DELIVERING: ContextVar[str | None] = ContextVar("airlock_delivering", default=None)
OnPoison = Callable[[str, bytes, str], None]


def parsed(raw: bytes) -> Any:
    """``raw`` as kombu parses an item: UTF-8 (bad bytes replaced), then its JSON dialect."""
    return loads(bytes_to_str(raw))  # type: ignore[no-untyped-call]


def envelope_problem(raw: bytes) -> str | None:
    """Why kombu's Redis channel could not take ``raw`` as a message, or None. What it does with
    an item: parse it (kombu's JSON), build a Message (the body decoded by its body_encoding,
    the headers read), file it under its delivery tag with its exchange and routing key."""
    try:
        payload = parsed(raw)
    except Exception as exc:  # JSONDecodeError, RecursionError, kombu's own type tags
        return because("not JSON", exc)
    if not isinstance(payload, dict):
        return f"not a kombu message: a JSON {type(payload).__name__}"
    props = payload.get("properties")
    if not isinstance(props, dict):
        return "not a kombu message: no properties"
    if not isinstance(props.get("delivery_tag"), str):
        return "not a kombu message: no delivery tag"
    info = props.get("delivery_info")
    if not isinstance(info, dict) or not {"exchange", "routing_key"} <= info.keys():
        return "not a kombu message: no delivery info"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "not a kombu message: headers are not an object"
    if headers and "compression" in headers:  # Airlock sends none; a small one can inflate to GiB
        return "compressed: refused"
    return _body_problem(payload.get("body"), props.get("body_encoding"))


def _body_problem(body: object, encoding: object) -> str | None:
    if not body:
        return None
    if not isinstance(body, str):
        return "body: not text"
    if encoding is None or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return None
    if encoding != "base64":
        return f"body: unknown encoding {escaped(str(encoding), 40)}"
    try:
        base64.b64decode(body.encode())  # as kombu decodes it
    except ValueError as exc:
        return because("body: not base64", exc)
    return None


def unacked_problem(raw: bytes) -> str | None:
    """Why kombu could not restore an entry of its unacknowledged hash, or None."""
    try:
        entry = parsed(raw)
    except Exception as exc:
        return because("not JSON", exc)
    if not isinstance(entry, list) or len(entry) != 3:
        return "not kombu's [message, exchange, routing key]"
    return None  # the message in it, restored to a queue, is screened when popped


def _text(key: bytes | str) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else key


class ScreenedRedis(redis.Redis):
    """The channel's client: a popped item kombu could not take is handed to ``on_poison``
    (key, item, reason) and the pop answers "nothing", as an empty queue does."""

    def __init__(self, *args: Any, on_poison: OnPoison, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_poison = on_poison

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        reply = super().parse_response(connection, command_name, **options)  # type: ignore[no-untyped-call]
        if command_name == "BRPOP" and reply and self._poisoned(_text(reply[0]), reply[1]):
            return None  # kombu's _brpop_read: Empty, then BRPOP again
        return reply

    def rpop(self, name: Any, count: int | None = None) -> Any:
        item = super().rpop(name, count)
        if count is None and isinstance(item, bytes) and self._poisoned(str(name), item):
            return None
        return item

    def _poisoned(self, key: str, item: bytes) -> bool:
        reason = envelope_problem(item)
        if reason is not None:
            self._on_poison(key, item, reason)
        return reason is not None


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        with self.channel.conn_or_acquire(client) as conn:
            entry = conn.hget(self.unacked_key, tag)
            reason = unacked_problem(entry) if entry else None
            if reason is not None:
                self.channel.set_aside(self.unacked_key, entry, reason)
                self._remove_from_indices(tag, conn.pipeline()).execute()  # type: ignore[no-untyped-call]
                return
        super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS

    def _get_client(self) -> Any:
        if self.global_keyprefix:  # Airlock's own readers (tasks.maintenance) use no prefix
            raise ValueError("Airlock's broker transport takes no global_keyprefix")
        return functools.partial(ScreenedRedis, on_poison=self._popped)

    def _popped(self, key: str, item: bytes, reason: str) -> None:
        self.set_aside(key.rsplit(self.sep, 1)[0], item, reason)  # less a priority suffix

    def set_aside(self, queue: str, raw: bytes, reason: str, **context: str) -> None:
        with self.conn_or_acquire() as client:
            deadletters.keep(client, DeadLetter.of(queue, raw, reason, time.time()), **context)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        token = DELIVERING.set(queue)
        try:
            super()._deliver(message, queue)  # type: ignore[no-untyped-call]
        finally:
            DELIVERING.reset(token)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """The same screening over kombu's Sentinel channel (its pool asks the Sentinels)."""


class SentinelTransport(Transport):
    default_port = 26379  # type: ignore[assignment]
    Channel = SentinelChannel
