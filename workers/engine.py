"""The Docker engine connection: built per process, never at import; errors translated here."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import docker
import docker.errors
import requests

from base.errors import DockerUnavailable, HostNotSafe, InfrastructureError

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
    except (docker.errors.DockerException, requests.RequestException, OSError,
            http.client.HTTPException) as exc:
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


def engine_id(api: docker.APIClient) -> str:
    """The engine's own ID (``docker info``): several engines may share one host's kernel."""
    return str(call("engine info", api.info).get("ID") or api.base_url)


def runtime_for(api: docker.APIClient, wanted: str) -> str:
    """Resolve ``wanted`` (a setting) against the engine's registered runtimes."""
    info = call("engine info", api.info)
    return choose_runtime(wanted, (info.get("Runtimes") or {}).keys(),
                          str(info.get("DefaultRuntime") or ""))


# --- a job's own calls ------------------------------------------------------------------------


class JobCalls:
    """The engine calls on a job's path (create, start, wait, kill, remove, inspect) through
    docker-py: the way for an engine reached other than by a UNIX socket."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api

    def create(self, kwargs: dict[str, Any]) -> str:
        return str(self.api.create_container(**kwargs)["Id"])

    def start(self, cid: str) -> None:
        self.api.start(cid)

    def wait(self, cid: str, timeout: float) -> int:
        return int(self.api.wait(cid, timeout=timeout)["StatusCode"])

    def kill(self, cid: str) -> None:
        self.api.kill(cid)

    def update(self, cid: str, body: dict[str, Any]) -> None:
        """Change a started container's resources (the engine's update body; the SDK's
        ``update_container`` has no pids limit)."""
        url = self.api._url("/containers/{0}/update", cid)
        self.api._result(self.api._post_json(url, data=body), True)

    def remove(self, cid: str) -> None:
        self.api.remove_container(cid, force=True)

    def inspect(self, cid: str) -> dict[str, Any]:
        return dict(self.api.inspect_container(cid))

    def running(self, label: str) -> list[dict[str, Any]]:
        """The running containers carrying ``label`` (``key=value``)."""
        return list(self.api.containers(filters={"label": [label]}))


@dataclass(frozen=True, slots=True)
class _Reply:
    """What docker-py's errors read of a response."""

    status_code: int
    reason: str
    url: str


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class SocketCalls(JobCalls):
    """The same calls with http.client on the engine's UNIX socket: about a third of the CPU of
    docker-py, which spends most of a small call in requests' session machinery (four to six
    calls a job). Each call on a connection of its own (a UNIX connect costs microseconds): an
    engine shutting down has taken its socket away, and a call then fails as it should rather
    than be answered by the old engine on a kept connection. Errors are docker-py's (NotFound,
    APIError), so ``translated`` and the callers serve both paths."""

    def __init__(self, api: docker.APIClient, path: str) -> None:
        super().__init__(api)
        self.path, self.prefix = path, f"/v{api._version}"
        self.timeout = float(api.timeout or 60)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Connection": "close"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = _UnixConnection(self.path, timeout or self.timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            reply = conn.getresponse()
            raw = reply.read()
        finally:
            conn.close()
        if reply.status < 400:
            return json.loads(raw) if raw else None
        try:
            explanation = str(json.loads(raw).get("message", ""))
        except ValueError:
            explanation = raw.decode("utf-8", "replace")
        about = _Reply(reply.status, reply.reason, path)
        error = docker.errors.NotFound if reply.status == 404 else docker.errors.APIError
        raise error(f"{reply.status} {reply.reason} for {path}", about, explanation)  # type: ignore[arg-type]

    def create(self, kwargs: dict[str, Any]) -> str:
        options = {k: v for k, v in kwargs.items() if k not in ("name", "use_config_proxy")}
        body = self.api.create_container_config(**options)
        return str(self.request("POST", f"/containers/create?name={quote(kwargs['name'])}",
                                body)["Id"])

    def start(self, cid: str) -> None:
        self.request("POST", f"/containers/{cid}/start")

    def wait(self, cid: str, timeout: float) -> int:
        return int(self.request("POST", f"/containers/{cid}/wait", timeout=timeout)["StatusCode"])

    def kill(self, cid: str) -> None:
        self.request("POST", f"/containers/{cid}/kill")

    def update(self, cid: str, body: dict[str, Any]) -> None:
        self.request("POST", f"/containers/{cid}/update", body)

    def remove(self, cid: str) -> None:
        self.request("DELETE", f"/containers/{cid}?force=1")

    def inspect(self, cid: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/containers/{cid}/json"))

    def running(self, label: str) -> list[dict[str, Any]]:
        filters = quote(json.dumps({"label": [label]}))
        return list(self.request("GET", f"/containers/json?filters={filters}"))


_CALLS: weakref.WeakKeyDictionary[docker.APIClient, JobCalls] = weakref.WeakKeyDictionary()
_CALLS_LOCK = threading.Lock()


def job_calls(api: docker.APIClient) -> JobCalls:
    """The job path's calls for ``api``: on its UNIX socket where it has one (made once per
    client), else through docker-py."""
    calls = _CALLS.get(api)
    if calls is None:
        with _CALLS_LOCK:
            calls = _CALLS.get(api)
            if calls is None:
                path = getattr(api.get_adapter(api.base_url), "socket_path", None)
                calls = SocketCalls(api, path) if isinstance(path, str) else JobCalls(api)
                _CALLS[api] = calls
    return calls
