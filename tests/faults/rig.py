"""The fault rig: real processes to break on purpose, and ways to look at what happened.

- ``RedisServer``: a dedicated redis-server on a free port (never the machine's 6379), with
  the append-only file on or off, killed with SIGKILL and started again on the same files.
- ``PgProxy``: a TCP proxy in front of the machine's PostgreSQL that the test controls: refuse
  and cut every connection (PostgreSQL "down"), drop a connection right after the server
  confirmed a COMMIT, or hold a statement (or the COMMIT's reply) in flight.
- ``Engine2``: the second Docker engine (scripts/second-engine.sh), restarted or stopped.
- ``EventLog``: the engine's container events of one fleet, streamed live (the engine keeps
  only a short history), to count creations and check that one job never ran twice at once.
- ``Fleet``: a scratch database, a fleet label and queue of its own, worker processes with
  settings of the test's choosing, and SQL helpers that make time pass (leases, deadlines).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import docker
import psutil
import redis
import requests
import sqlalchemy as sa
from pydantic import BaseModel, SecretStr

from airlock.client import Airlock
from airlock.records import JobRecord
from config.sections import Section
from config.settings import Settings
from tasks.streams import output_key
from tests.services import ROOT, WorkerProcess, airlock_containers, scratch_database
from workers import labels as L
from workers.labels import OWNER
from workers.runner import Beside
from workers.slots import Slot, Slots
from workers.storage import volumes_for

ENGINE1 = "unix:///var/run/docker.sock"
ENGINE2 = "unix:///run/airlock-engine2.sock"
ENGINE2_PIDFILE = Path("/run/airlock-engine2.pid")
SANDBOX = "airlock/sandbox:latest"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Redis


class RedisServer:
    """A redis-server of the test's own; ``appendonly`` picks durability (AOF, fsync every s);
    ``args``, more of its options, and ``login`` (user, password) to reach it with."""

    def __init__(self, workdir: Path, *, appendonly: bool, args: tuple[str, ...] = (),
                 login: tuple[str, str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.args = args
        self.login = login
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
             "--logfile", str(self.dir / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        user, password = self.login or (None, None)
        r = redis.Redis(port=self.port, socket_connect_timeout=1, username=user, password=password)
        try:
            wait_for("redis-server to answer", lambda: self._pings(r), timeout)
        finally:
            r.close()
        return self

    @staticmethod
    def _pings(r: redis.Redis) -> bool:
        try:
            return bool(r.ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: whatever the AOF has not fsynced is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


# --------------------------------------------------------------------------------------------
# PostgreSQL proxy

# The server's ReadyForQuery with status idle: the transaction is over, committed (an explicit
# COMMIT, or a statement run in autocommit, as the result write is).
COMMIT_DONE = b"Z\x00\x00\x00\x05I"
FINISH_SQL = b"stdout_truncated="  # only the result write sets this column


@dataclass(eq=False)  # kept in a set: hashed by identity
class _Pair:
    client: socket.socket
    upstream: socket.socket
    watching: bool = False  # saw the armed statement: act on the next COMMIT reply
    held: bool = False
    tail: bytes = b""

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class PgProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL, with faults on demand.

    ``mode`` decides what happens to a connection once it sent a statement containing
    ``pattern``: "drop_after_commit" closes it as soon as the server says the transaction
    committed
    (the transaction is durable, the client never hears so); "hold_statement" stops
    forwarding at that statement (it never reaches the server); "hold_after_commit" lets
    the COMMIT happen and withholds the reply. ``fired`` is set when it happened.
    """

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.lock = threading.Lock()
        self.pairs: set[_Pair] = set()
        self.listener: socket.socket | None = None
        self.mode: str | None = None
        self.pattern = FINISH_SQL
        self.fired = threading.Event()
        self.closed = False

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        query = "sslmode=disable" + ("&" + parts.query if parts.query else "")
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}", query=query))

    def start(self) -> PgProxy:
        self.up()
        return self

    def up(self) -> None:
        """Accept connections again (PostgreSQL is back)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """PostgreSQL is gone: new connections are refused, open ones cut."""
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self.cut_all()

    def cut_all(self) -> None:
        with self.lock:
            pairs, self.pairs = list(self.pairs), set()
        for pair in pairs:
            pair.close()

    def arm(self, mode: str, pattern: bytes = FINISH_SQL) -> None:
        self.pattern, self.fired = pattern, threading.Event()
        self.mode = mode

    def close(self) -> None:
        self.closed = True
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, up)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, to_server: bool) -> None:
        src, dst = (pair.client, pair.upstream) if to_server else (pair.upstream, pair.client)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_server and self.mode and not self.fired.is_set():
                    window = pair.tail + data
                    pair.tail = data[-len(self.pattern):]
                    if self.pattern in window:
                        pair.watching = True
                        if self.mode == "hold_statement":
                            pair.held = True
                            self.fired.set()
                if not to_server and pair.watching and COMMIT_DONE in data \
                        and not self.fired.is_set():
                    pair.watching = False
                    if self.mode == "drop_after_commit":
                        self.fired.set()
                        break
                    if self.mode == "hold_after_commit":
                        pair.held = True
                        self.fired.set()
                if pair.held:
                    while not self.closed and pair in self.pairs:
                        time.sleep(0.05)  # in flight until the test cuts it
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self.lock:
            self.pairs.discard(pair)
        pair.close()


# --------------------------------------------------------------------------------------------
# The second engine


class Engine2:
    """scripts/second-engine.sh, plus restarts. Stopped at the end only if this run started it."""

    script = ROOT / "scripts" / "second-engine.sh"

    def running(self) -> bool:
        return subprocess.run(["bash", str(self.script), "status"], capture_output=True).returncode == 0

    def start(self) -> None:
        subprocess.run(["bash", str(self.script), "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(["bash", str(self.script), "stop"], check=True, capture_output=True)

    def pid(self) -> int:
        return int(ENGINE2_PIDFILE.read_text().strip())

    def kill_daemon(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Stop the daemon (SIGTERM: it stops its containers first); return how long it took."""
        pid, t0 = self.pid(), time.monotonic()
        os.kill(pid, sig)
        wait_for("engine 2 to exit", lambda: not psutil.pid_exists(pid)
                 or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout)
        return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# Container events


@dataclass(frozen=True)
class ContainerEvent:
    time: float
    action: str
    id: str
    engine: str
    job: str
    attempt: int
    role: str = ""  # "pool": made ahead of its job, whose id is then only in the attempts table
    name: str = ""  # the container's name: its side resources' too (workers/runner.Beside)


class EventLog:
    """Live container events of one fleet on one or more engines (reconnects after restarts)."""

    def __init__(self, fleet: str, engines: tuple[str, ...] = (ENGINE1,)) -> None:
        self.fleet = fleet
        self.events: list[ContainerEvent] = []
        self.stop_flag = threading.Event()
        self.streams: dict[str, Any] = {}
        self.ready = {e: threading.Event() for e in engines}
        self.threads = [threading.Thread(target=self._follow, args=(e,), daemon=True)
                        for e in engines]

    def start(self) -> EventLog:
        for t in self.threads:
            t.start()
        for e, ready in self.ready.items():
            if not ready.wait(15):
                raise AssertionError(f"no event stream from {e}")
        return self

    def _follow(self, engine: str) -> None:
        while not self.stop_flag.is_set():
            api = None
            if not _answers(engine):  # down (a stopped second engine): docker-py would leak
                time.sleep(0.5)       # the socket of each failed connect
                continue
            try:
                # A fixed API version: "auto" asks the engine at once and, if it is down,
                # leaks the socket it opened for that (docker-py).
                api = docker.APIClient(base_url=engine, version="1.41", timeout=None)
                stream = api.events(decode=True, filters={
                    "type": "container", "label": [f"{L.FLEET}={self.fleet}"]})
                self.streams[engine] = stream
                self.ready[engine].set()
                for ev in stream:
                    attrs = ev.get("Actor", {}).get("Attributes", {})
                    self.events.append(ContainerEvent(
                        ev.get("timeNano", 0) / 1e9, ev.get("Action", ""), ev.get("id", ""),
                        engine, attrs.get(L.JOB, ""), int(attrs.get(L.ATTEMPT, "0") or 0),
                        attrs.get(L.ROLE, ""), attrs.get("name", "")))
            except Exception:
                time.sleep(0.5)
            finally:
                if engine in self.streams:
                    try:
                        self.streams.pop(engine).close()
                    except Exception:
                        pass
                if api is not None:
                    api.close()

    def close(self) -> None:
        self.stop_flag.set()
        for stream in list(self.streams.values()):
            try:
                stream.close()
            except Exception:
                pass
        for thread in self.threads:
            thread.join(5)

    def created(self, job: str) -> list[ContainerEvent]:
        return [e for e in self.events if e.action == "create" and e.job == job]

    def run_intervals(self) -> dict[str, list[tuple[float, float, str]]]:
        """Per job: (start, die, container) of every container that started; an interval
        without a die event ends now."""
        out: dict[str, list[tuple[float, float, str]]] = {}
        for start, die, e in self._intervals():
            out.setdefault(e.job, []).append((start, die, e.id))
        return out

    def names(self) -> set[str]:
        """The names of every container the fleet created while the log ran."""
        return {e.name for e in self.events if e.action == "create" and e.name}

    def creation(self, container_id: str) -> ContainerEvent | None:
        """The create event of one container (a pooled one's says role "pool" and no job)."""
        return next((e for e in self.events
                     if e.action == "create" and e.id == container_id), None)

    def intervals_of(self, container_ids: list[str]) -> list[tuple[float, float, str]]:
        """(start, die, container) of these containers, e.g. a job's from the attempts table
        (``Fleet.job_containers``): a pooled container's events carry no job label."""
        wanted = set(container_ids)
        return [(start, die, e.id) for start, die, e in self._intervals() if e.id in wanted]

    def _intervals(self) -> list[tuple[float, float, ContainerEvent]]:
        starts: dict[str, ContainerEvent] = {}
        dies: dict[str, float] = {}
        for e in self.events:
            if e.action == "start":
                starts[e.id] = e
            elif e.action == "die":
                dies.setdefault(e.id, e.time)
        return [(e.time, dies.get(cid, time.time()), e) for cid, e in starts.items()]


def overlaps(intervals: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of intervals that overlap in time."""
    ordered = sorted(intervals)
    return [(a[2], b[2]) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]


# --------------------------------------------------------------------------------------------
# A fleet of the test's own


def env_for(s: Settings) -> dict[str, str]:
    """AIRLOCK_* variables for every setting that differs from its default (a section's field
    by its own flat name, as an operator would write it)."""
    env = {}
    values: list[tuple[str, object, object]] = []
    for name, info in Settings.model_fields.items():
        value = getattr(s, name)
        if isinstance(value, Section):
            default = type(value).default()
            values += [(f.alias or field, getattr(value, field), getattr(default, field))
                       for field, f in type(value).model_fields.items()]
        else:
            values.append((name, value, info.get_default(call_default_factory=True)))
    for name, value, default in values:
        if value == default or isinstance(value, SecretStr) or value is None:
            continue
        if isinstance(value, BaseModel):
            text = value.model_dump_json()
        elif dataclasses.is_dataclass(value):
            text = json.dumps(dataclasses.asdict(value))  # type: ignore[arg-type]
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, default=lambda m: m.model_dump())
        else:
            text = str(value)
        env[f"AIRLOCK_{name.upper()}"] = text
    return env


@dataclass
class Attempt:
    attempt: int
    worker_host: str
    container_id: str | None
    container_started_at: datetime | None
    container_removed_at: datetime | None
    ended_at: datetime | None
    outcome: str | None


@dataclass
class Fleet:
    """One test's database, fleet label, queue, workers, client and event log."""

    settings: Settings
    logs: Path
    client: Airlock
    db: sa.Engine
    stack: ExitStack
    workers: list[WorkerProcess] = field(default_factory=list)

    def configure(self, **overrides: Any) -> Settings:
        """Change the fleet's settings (workers started later get them); a new client too."""
        self.settings = Settings.model_validate(self.settings.model_dump() | overrides)
        self.client.close()
        self.client = Airlock(self.settings)
        return self.settings

    def worker(self, name: str = "w", *, args: tuple[str, ...] = (), start: bool = True,
               **overrides: Any) -> WorkerProcess:
        s = self.settings.but(**overrides) if overrides else self.settings
        proc = WorkerProcess(s, self.logs / f"{s.fleet}-{name}.log", args=args, **env_for(s))
        self.workers.append(proc)
        if start:
            start_supervised(proc)
        return proc

    def submit(self, code: str, **fields: Any) -> str:
        limits = {k: fields.pop(k) for k in list(fields) if k in (
            "timeout_s", "cpus", "memory_bytes", "pids", "output_bytes", "disk_bytes")}
        spec: dict[str, Any] = {"code": code, **fields}
        if limits:
            spec["limits"] = limits
        return self.client.submit(spec).id

    def stored_job(self, code: str, timeout_s: float = 30) -> str:
        """A job recorded and admitted straight in the store, with no message: for tests that
        claim it themselves, as a worker would."""
        job, _ = self.client.store.create(spec={"code": code}, profile="python",
                                          image="airlock/sandbox:latest",
                                          limits={"timeout_s": timeout_s}, idempotency_key=None,
                                          label=None)
        self.sql("UPDATE jobs SET admitted_at = now() WHERE id = :j", j=job)
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> JobRecord:
        return self.client.wait(job_id, timeout)

    def record(self, job_id: str) -> JobRecord:
        return self.client.result(job_id)

    def sql(self, text: str, **params: Any) -> list[Any]:
        with self.db.begin() as conn:
            result = conn.execute(sa.text(text), params)
            return list(result.all()) if result.returns_rows else []

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self.sql("SELECT attempt, worker_host, container_id, container_started_at,"
                        " container_removed_at, ended_at, outcome FROM attempts"
                        " WHERE job_id = :j ORDER BY attempt", j=job_id)
        return [Attempt(*r) for r in rows]

    def job_containers(self, job_id: str) -> list[str]:
        """The containers of the job's attempts, in order, from the attempts table: the only
        link between a job and a pooled container (made before the job, without its label)."""
        rows = self.sql("SELECT container_id FROM attempts WHERE job_id = :j"
                        " AND container_id IS NOT NULL ORDER BY attempt", j=job_id)
        return [str(r[0]) for r in rows]

    def job_intervals(self, job_id: str, events: EventLog) -> list[tuple[float, float, str]]:
        """(fed, die, container) of the job's attempts' containers: from when the attempt
        recorded its container (just before feeding it the job) to the container's death. A
        pooled container was started before its job existed: its start event says nothing of
        when the job began in it."""
        fed = {a.container_id: a.container_started_at.timestamp() for a in self.attempts(job_id)
               if a.container_id and a.container_started_at is not None}
        return [(max(start, fed[cid]), die, cid)
                for start, die, cid in events.intervals_of(list(fed))]

    def pool_containers(self, engine: str = ENGINE1,
                        owner_pid: int | None = None) -> list[dict[str, Any]]:
        """The fleet's role=pool containers, optionally of one worker (its main process id, the
        org.airlock.owner label's tail), whether or not a job has taken them since."""
        found = [c for c in self.containers(engine)
                 if (c.get("Labels") or {}).get(L.ROLE) == L.ROLE_POOL]
        if owner_pid is None:
            return found
        return [c for c in found
                if (c.get("Labels") or {}).get(OWNER, "").endswith(f":{owner_pid}")]

    def idle_pool(self, engine: str = ENGINE1, owner_pid: int | None = None,
                  running: bool = True) -> list[str]:
        """Ids of pooled containers no attempt has taken (optionally only the running ones)."""
        found = [c for c in self.pool_containers(engine, owner_pid)
                 if not running or c.get("State") == "running"]
        if not found:
            return []
        taken = {str(r[0]) for r in self.sql(
            "SELECT container_id FROM attempts WHERE container_id = ANY(:ids)",
            ids=[c["Id"] for c in found])}
        return [c["Id"] for c in found if c["Id"] not in taken]

    def side_leftovers(self, events: EventLog) -> list[str]:
        """Names of the fleet's containers that are gone but left something beside them: a
        volume, a FIFO or spool folder, a cgroup parent, a slot (ATTACKS.md F21)."""
        s = self.settings
        engines = [e for e in (ENGINE1, ENGINE2) if _answers(e)]
        live = {n.lstrip("/") for engine in engines for c in self.containers(engine)
                for n in c.get("Names") or ()}
        beside = Beside(volumes_for(s.storage, s.sandbox.volumes_root), s.sandbox.io_dir,
                        s.sandbox.spool_dir)
        slots = _slot_entries(s.sandbox.slots_path)
        on_disk = set(beside.found()) | {slot.name for slot in slots}
        # Also the slots of containers never created (a worker killed just before): no event.
        orphaned = {slot.name for slot in slots if slot.fleet == s.fleet}
        return sorted(((events.names() & on_disk) | orphaned) - live)

    def leftovers(self, engine: str = ENGINE1, settle_s: float = 5.0) -> list[dict[str, Any]]:
        """The fleet's containers but the warm pool's spares no attempt took (the pool's to keep,
        recycle or drain; a spare whose worker died exits on its own): what a job must not leave
        behind. With the pool off, all of the fleet's containers. A job's container is removed
        just after its result is written: what is still there after ``settle_s`` is left."""
        deadline = time.monotonic() + settle_s
        while True:
            spares = set(self.idle_pool(engine, running=False))
            left = [c for c in self.containers(engine) if c["Id"] not in spares]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def created(self, job_id: str, events: EventLog) -> list[ContainerEvent]:
        """The create events of the job's containers: a cold one carries the job's label, a
        pooled one (made before the job) is known from the job's attempts."""
        labelled = events.created(job_id)
        seen = {e.id for e in labelled}
        pooled = [events.creation(cid) for cid in self.job_containers(job_id) if cid not in seen]
        return labelled + [e for e in pooled if e is not None]

    def run_intervals(self, job_id: str, events: EventLog) -> list[tuple[float, float, str]]:
        """(start, die, container) of each container the job ran in: a cold one's from its own
        events, a pooled one's from when its attempt fed it (``job_intervals``)."""
        labelled = events.run_intervals().get(job_id, [])
        seen = {cid for _, _, cid in labelled}
        return labelled + [i for i in self.job_intervals(job_id, events) if i[2] not in seen]

    def running_container(self, job_id: str, attempt: int | None = None) -> str:
        """Wait until the job's (current) attempt has a container; return its id."""
        def started() -> str | None:
            for a in reversed(self.attempts(job_id)):
                if (attempt is None or a.attempt == attempt) and a.container_id \
                        and a.outcome is None:
                    return a.container_id
            return None
        return wait_for(f"a container for job {job_id}", started, 60)

    def expire_lease(self, job_id: str) -> None:
        """Time passes: the lease ran out long ago (its worker stopped renewing it)."""
        self.sql("UPDATE jobs SET lease_until = now() - interval '1 hour' WHERE id = :j",
                 j=job_id)

    def expire_deadline(self, job_id: str) -> None:
        """Time passes: the attempt's run deadline passed too. Only honest once its container
        is really dead or gone: the run deadline is what keeps two containers apart."""
        self.sql("UPDATE jobs SET lease_until = now() - interval '1 hour',"
                 " run_deadline = now() - interval '1 hour' WHERE id = :j", j=job_id)

    def containers(self, engine: str = ENGINE1, job: str | None = None) -> list[dict[str, Any]]:
        found = airlock_containers(self.settings.fleet, engine)
        return [c for c in found if job is None or (c.get("Labels") or {}).get(L.JOB) == job]

    def end_events(self, job_id: str, r: redis.Redis | None = None) -> int:
        """How many end events the job's live stream carries (one per stored result)."""
        r = r or self.client.redis
        entries = r.xrange(output_key(job_id))
        return sum(1 for _, fields in entries if fields.get(b"t") == b"end")

    def broker_holds(self, job_id: str) -> str:
        """Where the broker has a message for the job: "queue", "unacked" or ""."""
        from tasks.maintenance import QUEUED, broker_holdings

        held = broker_holdings(self.client.redis, self.settings.queue).get(job_id)
        return "" if held is None else "queue" if held == QUEUED else "unacked"


def start_supervised(proc: WorkerProcess, tries: int = 3) -> int:
    """Start a worker the way a supervisor does: again if it refused to start. Only a refusal
    by its preflight is retried (on a host this busy a canary's verdict can come out wrong:
    Docker's OOMKilled flag lags behind the exit under load). Returns the refusals."""
    for refused in range(tries):
        try:
            proc.start()
            return refused
        except RuntimeError as exc:
            if "refusing to start: preflight" not in str(exc) or refused == tries - 1:
                raise
            time.sleep(1.0)
    return tries


def stop_all(workers: list[WorkerProcess]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            w.proc.wait(10)


def _answers(engine: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(engine.removeprefix("unix://"))
        except OSError:
            return False
    return True


def remove_fleet_containers(s: Settings, engines: tuple[str, ...]) -> int:
    """Remove the fleet's containers on each engine, and what each had beside it (its volume,
    FIFO folder and cgroup parent), as the reaper would: the workers were SIGKILLed."""
    removed = 0
    beside = Beside(volumes_for(s.storage, s.sandbox.volumes_root), s.sandbox.io_dir,
                    s.sandbox.spool_dir)
    for engine in engines:
        # docker-py leaks the socket of a failed connect (its unix transport does not close it),
        # and the GC's ResourceWarning then fails whichever test runs next: look first.
        if not _answers(engine):
            continue
        api = docker.APIClient(base_url=engine, version="auto", timeout=30)
        try:
            for c in api.containers(all=True, filters={"label": [f"{L.FLEET}={s.fleet}"]}):
                api.remove_container(c["Id"], force=True)
                removed += 1
                name = (c.get("Labels") or {}).get(L.NAME, "")
                if name:
                    beside.remove(name)
        except (docker.errors.DockerException, requests.RequestException):
            pass
        finally:
            api.close()
    return removed


def _slot_entries(path: str) -> list[Slot]:
    return Slots(path, first_uid=0, count=1, engine="", fleet="").entries()


def forget_queue(r: redis.Redis, queue: str) -> None:
    """Drop the test queue, its dead letters and its unacknowledged deliveries from a shared
    Redis."""
    r.delete(queue, f"airlock:dead:{queue}")
    for tag, value in r.hgetall("unacked").items():
        try:
            if json.loads(value)[2] == queue:
                r.hdel("unacked", tag)
                r.zrem("unacked_index", tag)
        except (ValueError, IndexError):
            continue


@contextmanager
def fleet_for(base: Settings, logs: Path, **overrides: Any) -> Iterator[Fleet]:
    """A fresh database, fleet and queue; everything stopped and removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack, scratch_database("airlock_f") as url:
        s = base.but(**{"database_url": url, "fleet": f"fault-{tag}",
                                    "queue": f"airlock-fault-{tag}", **overrides})
        db = sa.create_engine(url, pool_size=2)
        stack.callback(db.dispose)
        fleet = Fleet(s, logs, Airlock(s), db, stack)
        try:
            yield fleet
        finally:
            fleet.client.close()
            stop_all(fleet.workers)
            remove_fleet_containers(s, (ENGINE1, ENGINE2))
            for url_ in {s.redis_url, fleet.settings.redis_url, fleet.settings.broker_url}:
                try:
                    r = redis.Redis.from_url(url_, socket_connect_timeout=1, socket_timeout=2)
                    forget_queue(r, fleet.settings.queue)
                    r.close()
                except (redis.exceptions.RedisError, ValueError):
                    pass  # gone with the test's own servers (ValueError: a sentinel:// URL)
