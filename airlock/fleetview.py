"""How ``airlock fleet status`` shows the hosts: one row each, as plain strings. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks.hosts import HostRow

COLUMNS = ("host", "state", "engine", "version", "schema", "slots", "pool", "heartbeat")


def state(row: HostRow, clock: datetime, silent_after_s: float) -> str:
    """serving, drained (still running N), or silent: no heartbeat for too long."""
    age = heartbeat_age(row, clock)
    if age is None or age > silent_after_s:
        return "silent"
    if row.drained:
        return "drained" if row.running == 0 else f"draining ({row.running} running)"
    return "serving"


def heartbeat_age(row: HostRow, clock: datetime) -> float | None:
    return None if row.heartbeat_at is None else (clock - row.heartbeat_at).total_seconds()


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def endpoint(url: str | None) -> str:
    """An engine's address, short: a unix socket's path, a TCP engine's host:port."""
    if not url:
        return ""
    return url.removeprefix("http+docker://").removeprefix("unix://").removeprefix("tcp://")


def cells(row: HostRow, clock: datetime, silent_after_s: float) -> tuple[str, ...]:
    engine = f"{row.engine_version or '?'} {endpoint(row.engine_url)}".strip()
    return (row.name, state(row, clock, silent_after_s), engine, row.version or "?",
            row.schema_head or "?", f"{row.slots_in_use}/{row.concurrency} ({row.running} jobs)",
            f"{row.pool_warm}/{row.pool_size}", age_text(heartbeat_age(row, clock)))


def as_dict(row: HostRow, clock: datetime, silent_after_s: float) -> dict[str, Any]:
    return {
        "host": row.name, "state": state(row, clock, silent_after_s), "fleet": row.fleet,
        "queue": row.queue, "engine_id": row.engine_id, "engine_url": row.engine_url,
        "engine_version": row.engine_version,
        "version": row.version, "schema": row.schema_head, "concurrency": row.concurrency,
        "slots_in_use": row.slots_in_use, "running_jobs": row.running,
        "pool_size": row.pool_size, "pool_warm": row.pool_warm, "drained": row.drained,
        "heartbeat_age_s": heartbeat_age(row, clock),
        "heartbeat_at": row.heartbeat_at.isoformat() if row.heartbeat_at else None,
        "started_at": row.started_at.isoformat() if row.started_at else None,
    }


def plain(rows: list[tuple[str, ...]]) -> list[str]:
    """The table as aligned text lines (a header first): what a pipe or a log gets."""
    table = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
