"""The Docker engine connection: built per process, never at import; errors translated here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import docker
import docker.errors
import requests

from airlock.errors import DockerUnavailable, HostNotSafe, InfrastructureError

T = TypeVar("T")


def connect(base_url: str | None, timeout: float = 60.0) -> docker.APIClient:
    """A low-level client for one engine (``None``: DOCKER_HOST or the default socket)."""
    with translated("connect to the Docker engine"):
        if base_url:
            api = docker.APIClient(base_url=base_url, version="auto", timeout=int(timeout))
        else:
            api = docker.from_env(version="auto", timeout=int(timeout)).api
        # The engine is not reached through a web proxy: skip requests' per-call search of the
        # environment for proxy settings (a quarter of the SDK's CPU for a small call).
        api.trust_env = False
        api.ping()
        return api


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn the SDK's and requests' errors into Airlock's, at this one boundary."""
    try:
        yield
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        status = exc.status_code or 0
        if status >= 500:
            raise DockerUnavailable(f"{action}: {exc.explanation or exc}") from exc
        raise InfrastructureError(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise DockerUnavailable(f"{action}: {exc}") from exc


def call(action: str, fn: Callable[[], T]) -> T:
    with translated(action):
        return fn()


def choose_runtime(wanted: str, registered: Iterable[str], default: str) -> str:
    """The job containers' runtime: the engine's default for an empty ``wanted``, else
    ``wanted`` if the engine has it registered; a runtime it lacks is refused."""
    names = set(registered)
    if not wanted:
        return default or "runc"
    if wanted not in names:
        raise HostNotSafe(f"runtime {wanted!r} (AIRLOCK_RUNTIME) is not registered with the"
                          f" engine, which has: {', '.join(sorted(names)) or 'none'}")
    return wanted


def runtime_for(api: docker.APIClient, wanted: str) -> str:
    """Resolve ``wanted`` (a setting) against the engine's registered runtimes."""
    info = call("engine info", api.info)
    return choose_runtime(wanted, (info.get("Runtimes") or {}).keys(),
                          str(info.get("DefaultRuntime") or ""))
