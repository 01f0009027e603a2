"""Airlock's front door: the client (direct, or over HTTP), the CLI and the HTTP API."""

from airlock import http_client  # noqa: F401  (Airlock(url=...) is its HttpAirlock)
