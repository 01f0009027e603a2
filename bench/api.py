"""The HTTP API against the direct client, side by side, in one run on this machine.

    python bench/api.py                     # the full run (about 3 minutes on 2 cores)
    python bench/api.py --runs 5 --submissions 200   # smoke

Starts its own ``airlock worker`` and ``airlock api`` (a scratch database, its own fleet label
and queue, default settings otherwise), makes a tenant and a key, then measures, interleaving
the two sides so drift and neighbours' load hit both alike:

- latency of a trivial job (``print(6*7)``), submit to result: ``POST /v1/jobs?wait=`` against
  ``Airlock.submit(...).wait()`` in the direct mode (PostgreSQL and Redis);
- sustained submissions: 16 concurrent clients submitting as fast as they are answered
  (HTTP: each its own connection; direct: each its own client), submissions per second with
  the p50 and p99 of one submission. These jobs go to a queue no worker reads (the
  submission path alone is measured) and are cancelled afterwards;
- the first output event: a job prints the time and sleeps; how long after the print its
  event reaches the reader, over SSE against the direct mode's Redis stream.

Prints a table of ratios (HTTP / direct) and writes the figures to bench/results/api-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/api.py` from a checkout

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from airlock.client import Airlock  # noqa: E402
from config.settings import Settings  # noqa: E402
from tasks.keys import Scope  # noqa: E402
from tasks.store import make_engine  # noqa: E402
from tasks.tenancy import TenantStore  # noqa: E402
from tests.services import ApiProcess, WorkerProcess, scratch_database  # noqa: E402

TRIVIAL = "print(6*7)"
STAMP = "import time\nprint(repr(time.time()), flush=True)\ntime.sleep(0.3)"
RESULTS = ROOT / "bench" / "results"
TENANT = "bench"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if xs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


class Sides:
    """The two clients of one tenant: direct (PostgreSQL and Redis) and over HTTP."""

    def __init__(self, s: Settings, api: ApiProcess, key: str) -> None:
        self.s, self.url, self.key = s, api.url, key
        self.direct = Airlock(s, tenant=TENANT)
        self.http = Airlock(url=api.url, api_key=key)

    def direct_run(self) -> float:
        t = time.perf_counter()
        record = self.direct.submit(code=TRIVIAL).wait(60)
        return self._checked(t, record.stdout)

    def http_run(self, session: httpx.Client) -> float:
        t = time.perf_counter()
        answer = session.post("/v1/jobs", params={"wait": 60}, json={"code": TRIVIAL})
        return self._checked(t, answer.json().get("stdout"))

    @staticmethod
    def _checked(t: float, stdout: str | None) -> float:
        elapsed = time.perf_counter() - t
        if stdout != "42\n":
            raise RuntimeError(f"the trivial job printed {stdout!r}")
        return elapsed

    def first_event(self, client: Airlock) -> float:
        """Seconds from the job's print to its event in this client's hands."""
        handle = client.submit(code=STAMP)
        for event in handle.events():
            if event.kind == "stdout":
                seen = time.time()
                return seen - float(event.data.decode().split()[0])
        raise RuntimeError("no stdout event")

    def close(self) -> None:
        self.direct.close()
        self.http.close()


def session(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90)


def submissions(submit: Callable[[int], None], clients: int, total: int) -> dict[str, float]:
    """``total`` submissions by ``clients`` concurrent lanes; the rate and one's latency."""
    took: list[float] = []

    def lane(n: int) -> None:
        for _ in range(total // clients):
            t = time.perf_counter()
            submit(n)
            took.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lane, range(clients)))
    wall = time.perf_counter() - t0
    return {"per_s": len(took) / wall, "p50_ms": pct(took, 0.5) * 1000,
            "p99_ms": pct(took, 0.99) * 1000, "n": len(took)}


def sustained(s: Settings, api: ApiProcess, key: str, clients: int,
              total: int) -> dict[str, dict[str, float]]:
    """Both sides' submission rates, to a queue nobody reads; those jobs cancelled after."""
    directs = [Airlock(s, tenant=TENANT) for _ in range(clients)]
    sessions = [session(api.url, key) for _ in range(clients)]
    try:
        for c in directs:  # connections open before the clock starts, as on the HTTP side
            c.store.engine.connect().close()
        for h in sessions:
            h.get("/healthz")
        out = {}
        for _ in range(2):  # twice each, interleaved; the second round counts
            out["direct"] = submissions(
                lambda n: directs[n].submit(code=TRIVIAL) and None, clients, total)
            out["http"] = submissions(
                lambda n: sessions[n].post("/v1/jobs", json={"code": TRIVIAL}).raise_for_status()
                and None, clients, total)
        return out
    finally:
        for c in directs:
            c.close()
        for h in sessions:
            h.close()


def cancel_queued(s: Settings) -> int:
    engine = make_engine(s.database_url)
    client = Airlock(s, tenant=TENANT)
    try:
        with engine.connect() as conn:
            queued = conn.execute(sa.text("SELECT id FROM jobs WHERE status = 'queued'")).scalars().all()
        for job in queued:
            client.cancel(str(job))
        return len(queued)
    finally:
        client.close()
        engine.dispose()


@contextmanager
def scratch(args: argparse.Namespace) -> Iterator[tuple[Settings, str]]:
    """Settings for a scratch database and fleet, with a tenant and its key."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with scratch_database("airlock_bench") as url:
        tag = uuid.uuid4().hex[:8]
        s = Settings(database_url=url, fleet=f"bench-{tag}", queue=f"airlock-bench-{tag}",
                     log_format="json", api_key_secret=secrets.token_hex(32))
        assert s.api.key_secret is not None
        tenants = TenantStore(make_engine(url))
        try:
            tenants.create(TENANT)
            key = tenants.create_key(TENANT, Scope.SUBMIT,
                                     s.api.key_secret.get_secret_value().encode()).token
        finally:
            tenants.engine.dispose()
        yield s, key


@contextmanager
def running(*procs: WorkerProcess | ApiProcess) -> Iterator[None]:
    try:
        for proc in procs:
            proc.start()
        yield
    finally:
        for proc in reversed(procs):
            proc.stop()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with scratch(args) as (s, key):
        # Submissions first, before any worker runs (so no reconciler sends them on), to a
        # queue of their own, deleted with its jobs cancelled.
        unread = s.but(queue=f"{s.queue}-unread")
        idle = ApiProcess(unread, RESULTS / f"api-idle-{s.fleet}.log", AIRLOCK_LOG_FORMAT="json")
        with running(idle):
            rates = sustained(unread, idle, key, args.clients, args.submissions)
        cancelled = cancel_queued(unread)
        Airlock(s).redis.delete(unread.queue)
        print(f"submissions: {args.submissions} a side, {args.clients} clients;"
              f" {cancelled} unread jobs cancelled", flush=True)

        worker = WorkerProcess(s, RESULTS / f"worker-{s.fleet}.log", AIRLOCK_LOG_FORMAT="json")
        api = ApiProcess(s, RESULTS / f"api-{s.fleet}.log", AIRLOCK_LOG_FORMAT="json")
        with running(worker, api):
            print(f"worker and API ready: concurrency {s.concurrency},"
                  f" pool {s.pool.size}/process, storage {s.storage}", flush=True)
            sides = Sides(s, api, key)
            http = session(api.url, key)
            try:
                for _ in range(3):  # warm both paths (connections, imports, the pool)
                    sides.direct_run()
                    sides.http_run(http)
                direct, over_http = [], []
                for _ in range(args.runs):
                    direct.append(sides.direct_run())
                    over_http.append(sides.http_run(http))
                print(f"latency: {args.runs} runs a side", flush=True)
                first_direct, first_http = [], []
                for _ in range(args.event_runs):
                    first_direct.append(sides.first_event(sides.direct))
                    first_http.append(sides.first_event(sides.http))
                print(f"first event: {args.event_runs} runs a side", flush=True)
            finally:
                http.close()
                sides.close()
    return {
        "settings": {"concurrency": s.concurrency, "pool_size": s.pool.size,
                     "storage": s.storage, "clients": args.clients},
        "latency_ms": {"direct": median(direct) * 1000, "http": median(over_http) * 1000,
                       "direct_p95": pct(direct, 0.95) * 1000,
                       "http_p95": pct(over_http, 0.95) * 1000},
        "first_event_ms": {"direct": median(first_direct) * 1000,
                           "http": median(first_http) * 1000},
        "submissions": rates,
    }


def table(r: dict[str, Any]) -> str:
    lat, first, sub = r["latency_ms"], r["first_event_ms"], r["submissions"]
    rows = [
        ("submit -> result, median (ms)", lat["direct"], lat["http"],
         ratio(lat["http"], lat["direct"])),
        ("submit -> result, p95 (ms)", lat["direct_p95"], lat["http_p95"],
         ratio(lat["http_p95"], lat["direct_p95"])),
        ("first event after the print (ms)", first["direct"], first["http"],
         ratio(first["http"], first["direct"])),
        (f"submissions/s, {r['settings']['clients']} clients", sub["direct"]["per_s"],
         sub["http"]["per_s"], ratio(sub["http"]["per_s"], sub["direct"]["per_s"])),
        ("one submission, p50 (ms)", sub["direct"]["p50_ms"], sub["http"]["p50_ms"],
         ratio(sub["http"]["p50_ms"], sub["direct"]["p50_ms"])),
        ("one submission, p99 (ms)", sub["direct"]["p99_ms"], sub["http"]["p99_ms"],
         ratio(sub["http"]["p99_ms"], sub["direct"]["p99_ms"])),
    ]
    out = [f"{'':36} {'direct':>10} {'HTTP':>10} {'HTTP/direct':>12}"]
    out += [f"{name:36} {a:10.1f} {b:10.1f} {x:11.2f}x" for name, a, b, x in rows]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="latency runs per side")
    p.add_argument("--event-runs", type=int, default=15, help="first-event runs per side")
    p.add_argument("--clients", type=int, default=16, help="concurrent submitting clients")
    p.add_argument("--submissions", type=int, default=1600, help="submissions per side")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/api-<time>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t = time.monotonic()
    result = measure(args)
    result["bench_s"] = time.monotonic() - t
    out = args.out or RESULTS / f"api-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print()
    print(table(result))
    print(f"\nfigures: {out} ({result['bench_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
