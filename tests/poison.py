"""Broker items a worker cannot take as a job (ATTACKS.md F19), one of each kind, as anyone who
can write to the broker could push them onto a queue list: the fault test pushes them at a
real worker, the unit tests hand them to the checks that refuse them.

``stage`` says which part refuses an item: "transport" (``tasks.broker``: kombu could not
build a message of it), "consumer" (``tasks.consumer``: not a job this worker runs) or
"celery" (Celery's own check, through the consumer's ``on_invalid_task``).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from tasks.queue import TASK_NAME


@dataclass(frozen=True)
class Poison:
    name: str
    raw: bytes
    reason: str  # what the reason the worker records must contain
    stage: str = "transport"


def envelope(queue: str, body: bytes, *, headers: dict[str, Any] | None = None,
             content_type: str = "application/json", **properties: Any) -> dict[str, Any]:
    """A kombu message as kombu's Redis transport writes it."""
    return {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
            "content-type": content_type, "headers": headers or {},
            "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                           "delivery_info": {"exchange": "", "routing_key": queue},
                           "delivery_tag": str(uuid.uuid4())} | properties}


def task_message(queue: str, args: list[Any], *, task: Any = TASK_NAME, body: bytes | None = None,
                 content_type: str = "application/json", drop: tuple[str, ...] = (),
                 **headers: Any) -> bytes:
    """A Celery (protocol 2) task message, as the client sends one, with the changes given."""
    task_id = str(uuid.uuid4())
    fields = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
              "group": None, "eta": None, "expires": None, "retries": 0,
              "timelimit": [None, None], "argsrepr": repr(args), "kwargsrepr": "{}"} | headers
    if body is None:
        body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                      "chord": None}]).encode()
    message = envelope(queue, body, content_type=content_type,
                       headers={k: v for k, v in fields.items() if k not in drop})
    return json.dumps(message).encode()


def poisons(queue: str) -> list[Poison]:
    job = str(uuid.uuid4())  # well formed, but no such job: never run
    as_json = lambda value: json.dumps(value).encode()  # noqa: E731
    base = envelope(queue, b"[]")
    plain = json.loads(task_message(queue, [job]))
    return [
        Poison("not JSON", b"not json", "not JSON"),
        Poison("invalid UTF-8", b"\xff\xfe\x80{\x1b[8m", "not JSON"),
        Poison("nested too deep", b"[" * 200_000, "not JSON"),
        Poison("kombu type tag", b'{"__type__": "nope", "__value__": 1}', "not JSON"),
        Poison("a JSON list", b"[1, 2, 3]", "not a kombu message"),
        Poison("no properties", b'{"hello": "world"}', "not a kombu message"),
        Poison("delivery tag not text", as_json(base | {"properties": base["properties"] | {
            "delivery_tag": {"x": 1}}}), "not a kombu message"),
        Poison("headers not an object", as_json(base | {"headers": "x"}), "not a kombu message"),
        Poison("body not base64", as_json(base | {"body": "@@@ not base64 @@@"}), "body"),
        Poison("unknown body encoding", as_json(base | {"properties": base["properties"] | {
            "body_encoding": "rot13"}}), "body"),
        Poison("compressed body", as_json(envelope(queue, b"not zlib", headers={
            "compression": "application/x-gzip", "task": TASK_NAME, "id": job})), "compressed"),
        Poison("pickle", task_message(queue, [job], content_type="application/x-python-serialize",
                                      body=b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94."),
               "body", "consumer"),
        Poison("body not JSON", task_message(queue, [job], body=b"{{{"), "body", "consumer"),
        Poison("not a task message", as_json(envelope(queue, b"[]")), "not a Celery task",
               "consumer"),
        Poison("unknown task", task_message(queue, [job], task="airlock.evil"), "unknown task",
               "consumer"),
        Poison("Celery's own task", task_message(queue, [job], task="celery.accumulate"),
               "unknown task", "consumer"),
        Poison("task name not text", task_message(queue, [job], task=["airlock.run_job"]),
               "not a Celery task", "consumer"),
        Poison("no task id", task_message(queue, [job], drop=("id",)), "not a Celery task",
               "consumer"),
        Poison("bad eta", task_message(queue, [job], eta="yesterday"), "invalid", "celery"),
        Poison("body not UTF-8", as_json(plain | {"body": "\ud800", "properties": plain[
            "properties"] | {"body_encoding": None}}), "body cannot be decoded", "celery"),
        Poison("no arguments", task_message(queue, []), "arguments", "consumer"),
        Poison("two arguments", task_message(queue, [job, job]), "arguments", "consumer"),
        Poison("not a job id", task_message(queue, ["../../etc/passwd"]), "job id", "consumer"),
        Poison("keyword arguments", task_message(queue, [], body=json.dumps(
            [[], {"job_id": job}, {}]).encode()), "arguments", "consumer"),
    ]
