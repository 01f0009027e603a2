"""The Celery app. Configured at an entry point by ``configure``; nothing connects at import."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery

from config.settings import Settings
from tasks import streams

app = Celery("airlock")
app.conf.update(task_create_missing_queues=True)  # harmless defaults until configure()

_settings: Settings | None = None


def celery_config(s: Settings) -> dict[str, Any]:
    transport = broker_transport(s.broker_url, s.sentinel_master)
    options = transport.pop("broker_transport_options", {})
    return {
        "broker_url": s.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Longer than the hard time limit, or Redis hands a running job to a second worker.
            "visibility_timeout": s.timeouts.visibility_timeout_s,
            **options,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": s.soft_time_limit_s,
        "task_time_limit": s.hard_time_limit_s,
        "task_default_queue": s.queue,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "worker_concurrency": s.concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A message the worker cannot take is set aside, never its end (ATTACKS.md F19).
        "worker_consumer": "tasks.consumer:Consumer",
        **transport,
    }


def broker_transport(url: str, sentinel_master: str = "airlock") -> dict[str, Any]:
    """Airlock's Redis transport (``tasks.broker``) for a redis:// or rediss:// broker URL.
    Named explicitly, the transport no longer tells TLS from the scheme: a rediss:// URL
    without ``ssl_*`` options gets TLS with the server's certificate verified (kombu alone
    would not verify it). A sentinel:// URL (kombu's list, ``;`` between Sentinels) gets the
    Sentinel form, asking for the primary named ``sentinel_master``."""
    parts = urlsplit(url)
    if parts.scheme == "sentinel":
        options: dict[str, Any] = {"master_name": sentinel_master}
        password = streams.sentinels(url).password
        if password:  # the Sentinels ask for the same password as Redis
            options["sentinel_kwargs"] = {"password": password}
        return {"broker_transport": "tasks.broker:SentinelTransport",
                "broker_transport_options": options}
    if parts.scheme not in ("redis", "rediss"):
        return {}
    options = {"broker_transport": "tasks.broker:Transport"}
    if parts.scheme == "rediss" and not any(k.startswith("ssl_") for k in parse_qs(parts.query)):
        options["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def configure(s: Settings) -> Celery:
    """Apply the settings to the app; call once at an entry point before using ``app``. The
    worker's entry point imports ``tasks.jobs``, which registers the task on it."""
    global _settings
    _settings = s
    app.conf.update(celery_config(s))
    return app


def settings() -> Settings:
    if _settings is None:
        from config.settings import load_settings

        configure(load_settings())
    assert _settings is not None
    return _settings
