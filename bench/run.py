"""Airlock against a bare ``docker run --rm``, side by side, in one run on this machine.

    python bench/run.py                 # the full run (about 3 minutes on 2 cores)
    python bench/run.py --runs 3 --levels 1,2 --stream-mib 4 --throughput-jobs 4   # smoke

Starts its own ``airlock worker`` (a scratch database, its own fleet label and queue), then
measures, interleaving the two sides so drift and neighbours' load hit both alike:

- latency of a trivial job (``print(6*7)``): bare ``docker run --rm`` with Airlock's hardening,
  against ``Airlock.submit(...).wait()`` (the client submits; the result is visible to it);
- throughput with 1, 2, 4, 8 jobs in flight (closed loop: each lane starts its next job when
  its last one ended; 100 jobs a level and side, so the warm containers ready at its start
  weigh little);
- streaming: a job printing 64 MiB, read directly from ``docker run`` against read live through
  Airlock's event stream; the worker's memory growth meanwhile;
- per-phase medians from the job records, and the worker's peak memory (its process tree).

Prints a table of ratios (Airlock / bare) and writes the figures to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/run.py` from a checkout: tests.services is not installed

import psutil  # noqa: E402

from airlock.client import Airlock  # noqa: E402
from config.seccomp import profile_sha256  # noqa: E402
from config.settings import MiB, Settings  # noqa: E402
from tasks import streams  # noqa: E402
from tests.services import WorkerProcess, airlock_containers, scratch_database  # noqa: E402
from workers import engine  # noqa: E402
from workers import labels as L  # noqa: E402

TRIVIAL = "print(6*7)"
STREAM = "import sys\nb = b'x' * 2**20\nfor _ in range({mib}): sys.stdout.buffer.write(b)"
RESULTS = ROOT / "bench" / "results"


# --- figures ------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- the bare side ------------------------------------------------------------------------


def engine_profile(s: Settings) -> str:
    """A file holding the seccomp profile exactly as Airlock hands it to the engine
    (``Settings.seccomp_json``: this machine's ABIs only, no comments), for the CLI's
    ``--security-opt seccomp=``: both sides have the engine compile the same filter."""
    text = s.seccomp_json
    path = RESULTS / f"seccomp-{profile_sha256(text)[:16]}.json"
    if not path.exists():
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return str(path)


def bare_argv(s: Settings, code: str) -> list[str]:
    """``docker run --rm`` with the hardening of workers/spec.py: Airlock's seccomp profile (the
    text the worker hands the engine), all capabilities dropped but three, read-only root,
    sized tmpfs, the default limits, a uid of the jobs' range, no network, no log driver, the same
    OCI runtime (``s.runtime``, resolved). The job mounts are tmpfs (Airlock's storage=tmpfs
    mode)."""
    uid = s.sandbox.job_uids[0]
    lim, user = s.defaults, f"{uid}:{uid}"
    profile = engine_profile(s)
    argv = ["docker", "run", "--rm", "--runtime", s.runtime, "--read-only", "--network", "none",
            "--log-driver", "none", "--user", user, "--workdir", "/workspace", "--hostname", "sandbox",
            "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "SETUID", "--cap-add", "SETGID",
            "--security-opt", "no-new-privileges:true", "--security-opt", f"seccomp={profile}",
            "--cpu-period", "100000", "--cpu-quota", str(int(lim.cpus * 100_000)),
            "--memory", str(lim.memory_bytes), "--memory-swap", str(lim.memory_bytes),
            "--memory-swappiness", "0", "--pids-limit", str(lim.pids),
            "--shm-size", str(s.sandbox.shm_bytes), "--ipc", "private", "--ulimit", "core=0:0",
            "--env", "PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"]
    for mount, opts in (("/tmp", f"noexec,size={s.sandbox.tmpfs_tmp},mode=1777"),
                        ("/var/tmp", f"noexec,size={s.sandbox.tmpfs_var_tmp},mode=1777"),
                        ("/run", f"noexec,size={s.sandbox.tmpfs_run},mode=0755")):
        argv += ["--tmpfs", f"{mount}:rw,nosuid,nodev,{opts}"]
    for mount in ("/workspace", "/opt/venv", "/home/appuser"):
        argv += ["--tmpfs", f"{mount}:rw,exec,nosuid,nodev,size={lim.disk_bytes},"
                 f"uid={uid},gid={uid},mode=0700"]
    return [*argv, s.profiles["python"].image, "python3", "-c", code]


def bare_run(s: Settings) -> float:
    t = time.perf_counter()
    done = subprocess.run(bare_argv(s, TRIVIAL), capture_output=True, timeout=60)
    elapsed = time.perf_counter() - t
    if done.stdout != b"42\n":
        raise RuntimeError(f"bare run failed: {done.returncode} {done.stderr[-500:]!r}")
    return elapsed


def bare_stream(s: Settings, mib: int) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(bare_argv(s, STREAM.format(mib=mib)), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total, first = 0, 0.0
    while chunk := proc.stdout.read1(1 << 20):
        if not total:
            first = time.perf_counter()
        total += len(chunk)
    end = time.perf_counter()
    proc.wait(60)
    if total != mib * MiB:
        raise RuntimeError(f"bare stream read {total} bytes")
    return {"total_s": end - t0, "first_byte_s": first - t0,
            "mib_per_s": total / MiB / max(end - first, 1e-9)}


# --- the Airlock side ---------------------------------------------------------------------


@dataclass
class Side:
    """Airlock end to end: one client per lane (a client holds its own connections)."""

    settings: Settings
    clients: list[Airlock] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def client(self, lane: int) -> Airlock:
        while len(self.clients) <= lane:
            self.clients.append(Airlock(self.settings))
        return self.clients[lane]

    def run(self, lane: int = 0, keep: bool = False) -> float:
        client = self.client(lane)
        t = time.perf_counter()
        handle = client.submit(code=TRIVIAL)
        submitted = time.perf_counter()
        record = handle.wait(60)
        elapsed = time.perf_counter() - t
        if record.stdout != "42\n":
            raise RuntimeError(f"airlock job failed: {record.summary()}")
        if keep:
            self.records.append({**(record.phases or {}), "submit_ms": (submitted - t) * 1000,
                                 "end_to_end_ms": elapsed * 1000})
        return elapsed

    def stream(self, mib: int, tree: MemoryWatch) -> dict[str, float]:
        client = self.client(0)
        base = tree.rss()
        tree.peak_since_mark = base
        t0 = time.perf_counter()
        handle = client.submit(code=STREAM.format(mib=mib),
                               limits={"output_bytes": mib * MiB, "timeout_s": 120})
        total, skipped, first, last = 0, 0, 0.0, 0.0
        for event in handle.events():
            if event.kind in ("stdout", "stderr"):
                last = time.perf_counter()
                if not total:
                    first = last
                total += len(event.data)
            elif event.kind == "lagging":  # the relay skipped chunks rather than wait on Redis
                skipped += sum(json.loads(event.data).values())
            elif event.kind == "end":
                break
        end = time.perf_counter()
        record = handle.wait(60)
        client.redis.unlink(streams.output_key(handle.id))  # 64 MiB a run: freed now, off Redis's loop
        if total + skipped != mib * MiB or record.verdict != "ok":
            raise RuntimeError(f"airlock stream read {total} bytes: {record.summary()}")
        # From the first byte to the last, as on the bare side (whose end is its stdout's EOF,
        # before the engine removes the container): the result write and teardown that
        # follow the last byte are in total_s, not in the rate.
        return {"total_s": end - t0, "first_byte_s": first - t0,
                "mib_per_s": total / MiB / max(last - first, 1e-9),
                "skipped_mib": skipped / MiB,
                "worker_growth_mib": (tree.peak_since_mark - base) / MiB}

    def close(self) -> None:
        for c in self.clients:
            c.close()


class EnginePath:
    """Airlock's container path alone: ``workers.runner`` with the worker's own create arguments
    (``tasks.planning.plan_for``), cold, with no queue, database, client or pool. Informative:
    the difference to the Airlock side is what the framework around the container costs."""

    def __init__(self, s: Settings) -> None:
        from tasks.context import host_slots
        from tasks.contract import resolve
        from tasks.planning import HostFacts
        from workers.storage import volumes_for

        self.s = s
        self.host = HostFacts(s.seccomp_json, profile_sha256(s.seccomp_json))
        self.job = resolve({"code": TRIVIAL}, s)[1]
        self.volumes = volumes_for(s.storage, s.sandbox.volumes_root)
        self.apis: dict[int, Any] = {}
        api = engine.connect(None)
        self.slots = host_slots(s, engine.engine_id(api))
        api.close()

    def run(self, lane: int = 0) -> float:
        from tasks.planning import payload_for, plan_for
        from workers import runner

        api = self.apis.get(lane) or self.apis.setdefault(lane, engine.connect(None))
        t = time.perf_counter()
        name, now = f"airlock-bench-{uuid.uuid4().hex[:12]}", time.time()
        plan = plan_for(self.s, self.host, self.job, name=name, uid=self.slots.take(name, now).uid,
                        now=now)
        sandbox = runner.prepare(api, plan, self.volumes, self.slots)
        try:
            out = runner.run(sandbox, payload_for(self.job, self.s), self.job.limits, keep_bytes=MiB,
                             volumes=self.volumes)
        finally:
            runner.destroy(sandbox, self.volumes)
        if out.stdout != b"42\n":
            raise RuntimeError(f"engine path failed: {out}")
        return time.perf_counter() - t


class MemoryWatch:
    """Samples the RSS of the worker's process tree (main process and its pool children)."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.peak_since_mark = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self._tree: list[psutil.Process] = []
        self._tree_at = 0.0

    def rss(self) -> int:
        if time.monotonic() - self._tree_at > 2.0:  # listing children scans all of /proc
            self._tree = [self.proc, *self.proc.children(recursive=True)]
            self._tree_at = time.monotonic()
        total = 0
        for p in self._tree:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            value = self.rss()
            self.peak = max(self.peak, value)
            self.peak_since_mark = max(self.peak_since_mark, value)

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(2)


# --- the measurements ---------------------------------------------------------------------


def interleaved_latency(s: Settings, side: Side, eng: EnginePath,
                        runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"bare_ms": [], "airlock_ms": [], "engine_ms": []}
    runners: list[tuple[str, Callable[[], float]]] = [
        ("bare_ms", lambda: bare_run(s)), ("airlock_ms", lambda: side.run(keep=True)),
        ("engine_ms", eng.run)]
    for i in range(runs):
        order = runners if i % 2 == 0 else runners[::-1]  # neither side always goes first
        for key, run in order:
            out[key].append(run() * 1000)
    return out


def closed_loop(run: Callable[[int], float], lanes: int, jobs: int,
                settle: Callable[[], object] | None = None) -> float:
    """Jobs per second with ``lanes`` jobs in flight, ``jobs`` jobs in all. ``settle``, if
    given, runs before the clock stops: the Airlock side waits there until its warm pool is
    full again, so a level pays for every container its jobs used (it began with a full pool;
    without this, the refills still under way at its end would fall into the next side's
    time: about 1-2% at 50 jobs)."""
    counter = iter(range(jobs))
    lock = threading.Lock()

    def lane(n: int) -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            run(n)

    t = time.perf_counter()
    with ThreadPoolExecutor(lanes) as ex:
        for f in [ex.submit(lane, n) for n in range(lanes)]:
            f.result()
    if settle is not None:
        settle()
    return jobs / (time.perf_counter() - t)


def throughput(s: Settings, side: Side, eng: EnginePath, levels: list[int],
               jobs: int, warm: int = 0) -> list[dict[str, float]]:
    out = []
    refilled = (lambda: wait_warm(s, warm, timeout=10.0, poll_s=0.01)) if warm else None
    for level in levels:
        n = max(jobs, 2 * level)
        half, rest = n // 2 or 1, n - n // 2
        # Two rounds each, in the order bare, Airlock, engine, engine, Airlock, bare.
        b1 = closed_loop(lambda _: bare_run(s), level, half)
        a1 = closed_loop(side.run, level, half, refilled)
        e1 = closed_loop(eng.run, level, half)
        e2 = closed_loop(eng.run, level, rest)
        a2 = closed_loop(side.run, level, rest, refilled)
        b2 = closed_loop(lambda _: bare_run(s), level, rest)
        bare, airlock, engine_path = (b1 + b2) / 2, (a1 + a2) / 2, (e1 + e2) / 2
        out.append({"in_flight": level, "jobs": n, "bare_per_s": bare, "airlock_per_s": airlock,
                    "engine_per_s": engine_path, "ratio": ratio(airlock, bare)})
        print(f"  {level} in flight: bare {bare:.2f}/s, Airlock {airlock:.2f}/s,"
              f" engine path {engine_path:.2f}/s", flush=True)
    return out


def wait_warm(s: Settings, want: int, timeout: float = 60.0, poll_s: float = 0.2) -> int:
    """Wait until the worker's pool holds ``want`` started containers; how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        ready = [c for c in airlock_containers(s.fleet)
                 if (c.get("Labels") or {}).get(L.ROLE) == L.ROLE_POOL  # type: ignore[union-attr]
                 and c.get("State") == "running"]
        if len(ready) >= want or time.monotonic() > deadline:
            return len(ready)
        time.sleep(poll_s)


@contextmanager
def airlock_worker(args: argparse.Namespace) -> Iterator[tuple[Settings, WorkerProcess]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with scratch_database("airlock_bench") as url:
        tag = uuid.uuid4().hex[:8]
        s = Settings(database_url=url, fleet=f"bench-{tag}", queue=f"airlock-bench-{tag}",
                     concurrency=args.concurrency or max(args.levels), pool_size=args.pool_size,
                     storage=args.storage, log_format="json")
        api = engine.connect(s.docker_host)
        try:  # both sides on the fleet's runtime (AIRLOCK_RUNTIME, or --runtime), by name
            s = s.but(**{"runtime": engine.runtime_for(api, args.runtime or s.runtime)})
        finally:
            api.close()
        log = RESULTS / f"worker-{tag}.log"
        worker = WorkerProcess(s, log, AIRLOCK_LOG_FORMAT="json").start()
        try:
            yield s, worker
        finally:
            worker.stop()


def phase_medians(records: list[dict[str, Any]]) -> dict[str, float]:
    keys = ["submit_ms", "queue_wait_ms", "container_ready_ms", "run_ms", "collect_ms",
            "destroy_ms", "persist_ms", "end_to_end_ms"]
    out = {k: median([float(r[k]) for r in records if k in r]) for k in keys}
    out["pooled_share"] = sum(1 for r in records if r.get("pooled")) / max(1, len(records))
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with airlock_worker(args) as (s, worker):
        warm = wait_warm(s, args.pool_size * s.concurrency) if args.pool_size else 0
        print(f"worker ready: concurrency {s.concurrency}, pool {args.pool_size}/process,"
              f" {warm} warm containers, storage {s.storage}, runtime {s.runtime}", flush=True)
        side = Side(s)
        eng = EnginePath(s)
        try:
            with MemoryWatch(worker.pid) as tree:
                idle_rss = tree.rss()
                for _ in range(3):  # warm-up: imports, connections, page cache
                    bare_run(s)
                    side.run()
                    eng.run()
                print(f"latency: {args.runs} runs each, interleaved", flush=True)
                lat = interleaved_latency(s, side, eng, args.runs)
                print("throughput:", flush=True)
                tput = throughput(s, side, eng, args.levels, args.throughput_jobs,
                                  warm=args.pool_size * s.concurrency)
                print(f"streaming {args.stream_mib} MiB:", flush=True)
                streams_bare, streams_airlock = [], []
                for _ in range(args.stream_runs):
                    streams_bare.append(bare_stream(s, args.stream_mib))
                    streams_airlock.append(side.stream(args.stream_mib, tree))
                peak_rss = tree.peak
        finally:
            side.close()
    stream = {
        "mib": args.stream_mib,
        "bare_mib_per_s": median([r["mib_per_s"] for r in streams_bare]),
        "airlock_mib_per_s": median([r["mib_per_s"] for r in streams_airlock]),
        "bare_total_s": median([r["total_s"] for r in streams_bare]),
        "airlock_total_s": median([r["total_s"] for r in streams_airlock]),
        "worker_growth_mib": max(r["worker_growth_mib"] for r in streams_airlock),
        "airlock_skipped_mib": max(r["skipped_mib"] for r in streams_airlock),
        "runs": {"bare": streams_bare, "airlock": streams_airlock},
    }
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                 "docker": subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"],
                                          capture_output=True, text=True).stdout.strip()},
        "config": {"runs": args.runs, "levels": args.levels, "pool_size": args.pool_size,
                   "storage": args.storage, "runtime": s.runtime,
                   "worker_concurrency": args.concurrency or max(args.levels),
                   "throughput_jobs": args.throughput_jobs},
        "latency": {
            "bare_median_ms": median(lat["bare_ms"]), "bare_p95_ms": p95(lat["bare_ms"]),
            "airlock_median_ms": median(lat["airlock_ms"]),
            "airlock_p95_ms": p95(lat["airlock_ms"]), "engine_median_ms": median(lat["engine_ms"]),
            "samples": lat,
        },
        "phases_median_ms": phase_medians(side.records),
        "throughput": tput,
        "stream": stream,
        "worker_memory": {"idle_mib": idle_rss / MiB, "peak_mib": peak_rss / MiB},
    }


def table(r: dict[str, Any]) -> str:
    lat, st = r["latency"], r["stream"]
    rows = [("trivial job, median (ms)", lat["bare_median_ms"], lat["airlock_median_ms"], "<= 0.5",
             lat["engine_median_ms"]),
            ("trivial job, p95 (ms)", lat["bare_p95_ms"], lat["airlock_p95_ms"], "",
             p95(lat["samples"]["engine_ms"]))]
    for t in r["throughput"]:
        goal = ">= 1.5" if t["in_flight"] >= 4 else ">= 1.0"
        rows.append((f"throughput, {t['in_flight']} in flight (jobs/s)", t["bare_per_s"],
                     t["airlock_per_s"], goal, t["engine_per_s"]))
    rows.append((f"stream {st['mib']} MiB (MiB/s)", st["bare_mib_per_s"], st["airlock_mib_per_s"],
                 ">= 0.5", float("nan")))
    lines = [f"| {'measure':<34} | {'bare':>8} | {'Airlock':>8} | {'ratio':>6} | {'target':>6} |"
             f" {'engine path':>13} |",
             f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 15}|"]
    for name, bare, ours, goal, eng in rows:
        eng_text = "" if eng != eng else f"{eng:.1f} ({ratio(eng, bare):.2f})"
        lines.append(f"| {name:<34} | {bare:>8.1f} | {ours:>8.1f} | {ratio(ours, bare):>6.2f} |"
                     f" {goal:>6} | {eng_text:>13} |")
    ph = r["phases_median_ms"]
    mem = r["worker_memory"]
    lines += [
        "",
        "engine path: Airlock's container path alone (runner, same create arguments, cold, no"
        " queue, database or client), with its ratio to bare",
        f"worker memory: growth while streaming {st['mib']} MiB {st['worker_growth_mib']:.1f} MiB"
        f" (target < 50); idle {mem['idle_mib']:.0f} MiB, peak {mem['peak_mib']:.0f} MiB"
        f" ({r['config']['worker_concurrency']} processes); live stream skipped"
        f" {st['airlock_skipped_mib']:.1f} MiB at most",
        "phases (median ms): " + ", ".join(
            f"{k.removesuffix('_ms')} {v:.0f}" for k, v in ph.items() if k.endswith("_ms")),
        f"pooled share of latency runs: {ph['pooled_share']:.0%}; storage {r['config']['storage']};"
        f" runtime {r['config'].get('runtime', 'runc')} (both sides);"
        f" load average at the end {r['host']['load_avg_at_end'][0]:.1f}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="latency runs per side")
    p.add_argument("--levels", default="1,2,4,8", help="jobs in flight, comma-separated")
    # 100, not fewer: a level starts with every worker process's warm container ready, a head
    # start worth about one job per process (8 of 40 jobs gave 1.50-1.67x at 8 in flight where
    # 100 gave 1.46x); with 100 jobs the figure is close to the steady state.
    p.add_argument("--throughput-jobs", type=int, default=100, help="jobs per level and side")
    p.add_argument("--stream-mib", type=int, default=64)
    p.add_argument("--stream-runs", type=int, default=3)
    p.add_argument("--pool-size", type=int, default=1, help="warm containers per worker process")
    p.add_argument("--concurrency", type=int, default=0,
                   help="worker processes (default: the highest level, one per job in flight)")
    p.add_argument("--storage", choices=("tmpfs", "btrfs"), default="tmpfs",
                   help="Airlock's job mounts: tmpfs like the bare side (default), or btrfs"
                        " subvolumes with quota groups (Airlock's default in production)")
    p.add_argument("--runtime", default="",
                   help="OCI runtime of both sides, e.g. crun (default: AIRLOCK_RUNTIME, else"
                        " the engine's default)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in str(args.levels).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t = time.monotonic()
    result = measure(args)
    result["bench_s"] = time.monotonic() - t
    out = args.out or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print()
    print(table(result))
    print(f"\nfigures: {out} ({result['bench_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
