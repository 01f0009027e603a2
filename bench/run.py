"""Airlock against a bare ``docker run --rm``, side by side, in one run on this machine.

    python bench/run.py                 # the full run (about 6 minutes on 2 cores)
    python bench/run.py --peers         # and epicbox and llm-sandbox beside it (the peers extra)
    python bench/run.py --runs 3 --levels 1,2 --stream-mib 4 --throughput-jobs 4   # smoke

Starts an ``airlock worker`` per configuration of Airlock (a scratch database each, its own
fleet label and queue): ``default``, the default fleet (btrfs job storage, the default warm
pool, the engine's default runtime, cpusets on), the main figures; and ``tmpfs``, the same with
tmpfs job mounts like the bare side's, reported beside it. Then measures, interleaving every
side so that drift and neighbours' load hit all alike:

- latency of a trivial job (``print(6*7)``): bare ``docker run --rm`` with Airlock's hardening,
  against ``Airlock.submit(...).wait()`` (the client submits; the result is visible to it);
- the wall time of a CPU-bound job (about 0.3 s of one core's work);
- throughput with 1, 2, 4, 8 jobs in flight (closed loop: each lane starts its next job when
  its last one ended; 100 jobs a level and side, so the warm containers ready at its start
  weigh little);
- streaming: a job printing 64 MiB, read directly from ``docker run`` against read live through
  Airlock's event stream; the worker's memory growth meanwhile;
- per-phase medians from the job records, and the worker's peak memory (its process tree);
- with ``--peers``: the same jobs and levels through epicbox and llm-sandbox (bench/peers.py),
  and the hardening each side applied, from ``docker inspect`` of a live container.

Prints a table of ratios (each side / bare) and writes the figures to bench/results/<time>.json.
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
from contextlib import ExitStack, contextmanager
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
# About 0.3 s of one core's work in the sandbox image's python3: the job whose wall time a
# cpuset or a neighbour changes, and a peer's per-job cost matters less.
CPU_BOUND = "s = 0\nfor i in range(3_000_000):\n    s += i * i % 7\nprint(s)"
CPU_BOUND_OUT = f"{sum(i * i % 7 for i in range(3_000_000))}\n"
# The measured configurations of Airlock: the default fleet (btrfs job storage, the default
# pool, the engine's default runtime, cpusets on), and job mounts on tmpfs like the bare side.
CONFIGS: dict[str, dict[str, Any]] = {"default": {}, "tmpfs": {"storage": "tmpfs"},
                                     "nocpuset": {"cpuset": "off"}}
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


def bare_run(s: Settings, code: str = TRIVIAL, expect: str = "42\n") -> float:
    t = time.perf_counter()
    done = subprocess.run(bare_argv(s, code), capture_output=True, timeout=120)
    elapsed = time.perf_counter() - t
    if done.stdout != expect.encode():
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

    def run(self, lane: int = 0, keep: bool = False, code: str = TRIVIAL,
            expect: str = "42\n") -> float:
        client = self.client(lane)
        t = time.perf_counter()
        handle = client.submit(code=code)
        submitted = time.perf_counter()
        record = handle.wait(120)
        elapsed = time.perf_counter() - t
        if record.stdout != expect:
            raise RuntimeError(f"airlock job failed: {record.summary()}")
        if keep:  # phases read at the end: the removal's are added after the result
            self.records.append({"id": handle.id, "submit_ms": (submitted - t) * 1000,
                                 "end_to_end_ms": elapsed * 1000})
        return elapsed

    def phases(self) -> list[dict[str, Any]]:
        """The kept runs' phases, as their records hold them now."""
        client = self.client(0)
        return [{**(client.result(r["id"]).phases or {}), **r} for r in self.records]

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
        return self._sum(lambda p: int(p.memory_info().rss))

    def pss(self) -> int:
        """The tree's proportional set size: each page shared by n processes counts 1/n in
        each (the sum of RSS counts a page a pool child shares with its parent in both). What
        the tree costs the host's memory."""
        return self._sum(lambda p: int(p.memory_full_info().pss))

    def _sum(self, read: Callable[[psutil.Process], int]) -> int:
        """``read`` summed over the tree (a process gone meanwhile counts nothing)."""
        if time.monotonic() - self._tree_at > 2.0:  # listing children scans all of /proc
            self._tree = [self.proc, *self.proc.children(recursive=True)]
            self._tree_at = time.monotonic()
        total = 0
        for p in self._tree:
            try:
                total += read(p)
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


@dataclass
class Contender:
    """One column of the benchmark: what runs a job in lane ``n`` and returns its seconds."""

    key: str
    title: str
    run: Callable[[int], float]
    cpu_bound: Callable[[], float] | None = None
    latency: Callable[[], float] | None = None  # a latency run, if not run(0)
    settle: Callable[[], object] | None = None  # waits until a warm pool is full again
    jobs_scale: float = 1.0  # share of --throughput-jobs it runs per level (slow peers: less)


def interleaved(contenders: list[Contender], runs: int,
                pick: Callable[[Contender], Callable[[], float] | None]) -> dict[str, list[float]]:
    """``runs`` samples (ms) of each contender's ``pick``, the order reversed every other run."""
    out: dict[str, list[float]] = {f"{c.key}_ms": [] for c in contenders if pick(c) is not None}
    for i in range(runs):
        for c in contenders if i % 2 == 0 else contenders[::-1]:  # none always goes first
            fn = pick(c)
            if fn is not None:
                out[f"{c.key}_ms"].append(fn() * 1000)
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


def throughput(contenders: list[Contender], levels: list[int],
               jobs: int) -> list[dict[str, float]]:
    """At each level two rounds per contender, in order then in reverse (bare, Airlock, ...,
    ..., Airlock, bare), so drift hits all alike."""
    out = []
    for level in levels:
        rates: dict[str, list[float]] = {c.key: [] for c in contenders}
        for order in (contenders, contenders[::-1]):
            for c in order:
                n = max(int(jobs * c.jobs_scale) // 2, level, 1)
                rates[c.key].append(closed_loop(c.run, level, n, c.settle))
        row: dict[str, float] = {"in_flight": level, "jobs": jobs}
        row |= {f"{k}_per_s": statistics.fmean(v) for k, v in rates.items()}
        row["ratio"] = ratio(row["airlock_per_s"], row["bare_per_s"])
        out.append(row)
        print(f"  {level} in flight: " + ", ".join(
            f"{c.title} {row[c.key + '_per_s']:.2f}/s" for c in contenders), flush=True)
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
def airlock_worker(args: argparse.Namespace, config: str,
                   tag: str) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A worker of the configuration ``config`` (CONFIGS), on a scratch database of its own."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with scratch_database("airlock_bench") as url:
        ctag = f"{tag}-{config}"
        s = Settings(database_url=url, fleet=f"bench-{ctag}", queue=f"airlock-bench-{ctag}",
                     concurrency=args.concurrency or max(args.levels), pool_size=args.pool_size,
                     log_format="json", **CONFIGS[config])
        api = engine.connect(s.docker_host)
        try:  # every side on the fleet's runtime (AIRLOCK_RUNTIME, or --runtime), by name
            s = s.but(**{"runtime": engine.runtime_for(api, args.runtime or s.runtime)})
        finally:
            api.close()
        log = RESULTS / f"worker-{ctag}.log"
        worker = WorkerProcess(s, log, AIRLOCK_LOG_FORMAT="json",
                               AIRLOCK_CPUSET=s.sandbox.cpuset).start()
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


def config_title(config: str, s: Settings) -> str:
    return f"Airlock {config} ({s.storage}, pool {s.pool.size}, {s.runtime})"


@dataclass
class Fleet:
    """One configuration of Airlock under measurement: its settings, worker, client side and
    memory watch."""

    config: str
    settings: Settings
    worker: WorkerProcess
    side: Side
    tree: MemoryWatch
    idle_rss: int = 0
    idle_pss: int = 0

    @property
    def key(self) -> str:
        return "airlock" if self.config == "default" else f"airlock_{self.config}"

    def contender(self, warm: int) -> Contender:
        s, side = self.settings, self.side
        settle = (lambda: wait_warm(s, warm, timeout=10.0, poll_s=0.01)) if warm else None
        return Contender(self.key, config_title(self.config, s), side.run, settle=settle,
                         cpu_bound=lambda: side.run(code=CPU_BOUND, expect=CPU_BOUND_OUT),
                         latency=lambda: side.run(keep=True))  # its phases kept


def peer_contenders(jobs_scale: float) -> list[Contender]:
    import peers

    out = []
    for peer in peers.peers():
        def run(_lane: int, peer: Any = peer, code: str = TRIVIAL, expect: str = "42\n") -> float:
            t = time.perf_counter()
            if peer.run(code) != expect:
                raise RuntimeError(f"{peer.name}: wrong output")
            return time.perf_counter() - t
        out.append(Contender(peer.name.replace("-", "_"), peer.name, run, jobs_scale=jobs_scale,
                             cpu_bound=lambda run=run: run(0, code=CPU_BOUND, expect=CPU_BOUND_OUT)))
    return out


def peer_hardening(fleets: list[Fleet]) -> dict[str, dict[str, str]]:
    """What each side applied, from ``docker inspect`` of a live container of each."""
    import peers

    sleep = "import time; time.sleep(1.5)"
    out = {}
    for peer in peers.peers():
        out[peer.name] = peers.hardening(peer, sleep)
    s = fleets[0].settings

    def airlock_live() -> str | None:
        found = [c for c in airlock_containers(s.fleet) if c.get("State") == "running"]
        return str(found[0]["Id"]) if found else None

    out["Airlock"] = peers.applied(peers.inspect_live(lambda: fleets[0].side.run(
        code=sleep + "\nprint(6*7)"), airlock_live))
    return out


def stream_figures(runs: list[tuple[dict[str, float], dict[str, float]]], mib: int) -> dict[str, Any]:
    bare, airlock = [r[0] for r in runs], [r[1] for r in runs]
    return {
        "mib": mib,
        "bare_mib_per_s": median([r["mib_per_s"] for r in bare]),
        "airlock_mib_per_s": median([r["mib_per_s"] for r in airlock]),
        "bare_total_s": median([r["total_s"] for r in bare]),
        "airlock_total_s": median([r["total_s"] for r in airlock]),
        "worker_growth_mib": max(r["worker_growth_mib"] for r in airlock),
        "airlock_skipped_mib": max(r["skipped_mib"] for r in airlock),
        "runs": {"bare": bare, "airlock": airlock},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        fleets: list[Fleet] = []
        for config in args.configs:
            s, worker = stack.enter_context(airlock_worker(args, config, tag))
            side = Side(s)
            stack.callback(side.close)
            tree = stack.enter_context(MemoryWatch(worker.pid))
            fleets.append(Fleet(config, s, worker, side, tree))
        warm = args.pool_size * fleets[0].settings.concurrency
        for f in fleets:
            ready = wait_warm(f.settings, warm) if warm else 0
            f.idle_rss, f.idle_pss = f.tree.rss(), f.tree.pss()
            print(f"{config_title(f.config, f.settings)}: concurrency {f.settings.concurrency},"
                  f" {ready} warm containers, cpuset {f.settings.sandbox.cpuset}", flush=True)
        s = fleets[0].settings
        eng = EnginePath(s)
        contenders = [Contender("bare", "bare", lambda _: bare_run(s),
                                cpu_bound=lambda: bare_run(s, CPU_BOUND, CPU_BOUND_OUT)),
                      *(f.contender(warm) for f in fleets),
                      Contender("engine", "engine path", eng.run)]
        if args.peers:
            contenders += peer_contenders(args.peer_jobs / args.throughput_jobs)
        for _ in range(3):  # warm-up: imports, connections, page cache
            for c in contenders:
                c.run(0)
        print(f"latency: {args.runs} runs each, interleaved", flush=True)
        lat = interleaved(contenders, args.runs,
                          lambda c: c.latency or (lambda: c.run(0)))
        print(f"CPU-bound job: {args.cpu_runs} runs each", flush=True)
        cpu = interleaved(contenders, args.cpu_runs, lambda c: c.cpu_bound)
        print("throughput:", flush=True)
        tput = throughput(contenders, args.levels, args.throughput_jobs)
        print(f"streaming {args.stream_mib} MiB:", flush=True)
        streams_by: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {
            f.config: [] for f in fleets}
        for _ in range(args.stream_runs):
            for f in fleets:
                streams_by[f.config].append((bare_stream(s, args.stream_mib),
                                             f.side.stream(args.stream_mib, f.tree)))
        hardening = peer_hardening(fleets) if args.peers else {}
        peaks = {f.config: f.tree.peak for f in fleets}
        for f in fleets:
            f.side.records = f.side.phases()
    return report(args, fleets, contenders, lat, cpu, tput, streams_by, peaks, hardening)


def report(args: argparse.Namespace, fleets: list[Fleet], contenders: list[Contender],
           lat: dict[str, list[float]], cpu: dict[str, list[float]], tput: list[dict[str, float]],
           streams_by: dict[str, Any], peaks: dict[str, int],
           hardening: dict[str, dict[str, str]]) -> dict[str, Any]:
    main = fleets[0]
    per_config = {f.config: {
        "title": config_title(f.config, f.settings), "key": f.key,
        "storage": f.settings.storage, "pool_size": f.settings.pool.size,
        "runtime": f.settings.runtime, "cpuset": f.settings.sandbox.cpuset,
        "phases_median_ms": phase_medians(f.side.records),
        "stream": stream_figures(streams_by[f.config], args.stream_mib),
        "worker_memory": {"idle_mib": f.idle_rss / MiB, "idle_pss_mib": f.idle_pss / MiB,
                          "peak_mib": peaks[f.config] / MiB},
    } for f in fleets}
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                 "docker": subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"],
                                          capture_output=True, text=True).stdout.strip()},
        "config": {"runs": args.runs, "levels": args.levels, "pool_size": args.pool_size,
                   "storage": main.settings.storage, "runtime": main.settings.runtime,
                   "configs": args.configs, "peers": args.peers,
                   "worker_concurrency": main.settings.concurrency,
                   "throughput_jobs": args.throughput_jobs, "peer_jobs": args.peer_jobs},
        "columns": {c.key: c.title for c in contenders},
        "latency": {
            "median_ms": {k.removesuffix("_ms"): median(v) for k, v in lat.items()},
            "p95_ms": {k.removesuffix("_ms"): p95(v) for k, v in lat.items()},
            "bare_median_ms": median(lat["bare_ms"]), "bare_p95_ms": p95(lat["bare_ms"]),
            "airlock_median_ms": median(lat["airlock_ms"]),
            "airlock_p95_ms": p95(lat["airlock_ms"]), "engine_median_ms": median(lat["engine_ms"]),
            "samples": lat,
        },
        "cpu_bound": {"median_ms": {k.removesuffix("_ms"): median(v) for k, v in cpu.items()},
                      "samples": cpu},
        "phases_median_ms": per_config[main.config]["phases_median_ms"],
        "throughput": tput,
        "stream": per_config[main.config]["stream"],
        "worker_memory": per_config[main.config]["worker_memory"],
        "configs": per_config,
        "hardening": hardening,
    }


def cell(value: float, bare: float) -> str:
    return "" if value != value else f"{value:.1f} ({ratio(value, bare):.2f})"


def table(r: dict[str, Any]) -> str:
    cols = [k for k in r["columns"] if k != "bare"]
    lat, cpu = r["latency"], r["cpu_bound"]["median_ms"]
    rows: list[tuple[str, float, dict[str, float], str]] = [
        ("trivial job, median (ms)", lat["median_ms"]["bare"], lat["median_ms"], "<= 0.25"),
        ("trivial job, p95 (ms)", lat["p95_ms"]["bare"], lat["p95_ms"], ""),
        ("CPU-bound job, median (ms)", cpu.get("bare", float("nan")), cpu, "")]
    for t in r["throughput"]:
        goal = ">= 2.0" if t["in_flight"] >= 4 else ">= 1.0"
        rows.append((f"throughput, {t['in_flight']} in flight (jobs/s)", t["bare_per_s"],
                     {k: t.get(f"{k}_per_s", float("nan")) for k in cols}, goal))
    stream = {r["configs"][c]["key"]: r["configs"][c]["stream"]["airlock_mib_per_s"]
              for c in r["configs"]}
    rows.append((f"stream {r['stream']['mib']} MiB (MiB/s)", r["stream"]["bare_mib_per_s"],
                 stream, ">= 1.0"))
    widths = [max(16, len(r["columns"][k]) + 2) for k in cols]
    head = f"| {'measure':<34} | {'bare':>8} | " + " | ".join(
        f"{r['columns'][k]:>{w}}" for k, w in zip(cols, widths, strict=True)) + " | target |"
    lines = [head, "|" + "|".join("-" * len(part) for part in head.split("|")[1:-1]) + "|"]
    for name, bare, values, goal in rows:
        lines.append(f"| {name:<34} | {bare:>8.1f} | " + " | ".join(
            f"{cell(values.get(k, float('nan')), bare):>{w}}"
            for k, w in zip(cols, widths, strict=True)) + f" | {goal:>6} |")
    lines += ["", "each cell: the figure (its ratio to bare); engine path: Airlock's container path"
              " alone (runner, the default fleet's create arguments, cold, no queue, database or"
              " client)"]
    for config in r["configs"].values():
        st, mem, ph = config["stream"], config["worker_memory"], config["phases_median_ms"]
        lines += [
            f"{config['title']}, cpuset {config['cpuset']}: worker memory growth while streaming"
            f" {st['mib']} MiB {st['worker_growth_mib']:.1f} MiB (target < 50); idle RSS"
            f" {mem['idle_mib']:.0f} MiB (PSS {mem['idle_pss_mib']:.0f} MiB), peak RSS"
            f" {mem['peak_mib']:.0f} MiB"
            f" ({r['config']['worker_concurrency']} processes); live stream skipped"
            f" {st['airlock_skipped_mib']:.1f} MiB at most",
            "  phases (median ms): " + ", ".join(
                f"{k.removesuffix('_ms')} {v:.0f}" for k, v in ph.items() if k.endswith("_ms"))
            + f"; pooled {ph['pooled_share']:.0%}"]
    if r["hardening"]:
        lines += ["", hardening_table(r["hardening"])]
    lines.append(f"load average at the end {r['host']['load_avg_at_end'][0]:.1f}")
    return "\n".join(lines)


def hardening_table(h: dict[str, dict[str, str]]) -> str:
    names = list(h)
    fields = list(next(iter(h.values())))
    lines = ["| hardening | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for field_ in fields:
        lines.append(f"| {field_} | " + " | ".join(h[n][field_] for n in names) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="latency runs per side")
    p.add_argument("--cpu-runs", type=int, default=5, help="CPU-bound job runs per side")
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
    p.add_argument("--configs", default="default,tmpfs",
                   help=f"Airlock's configurations, the first the main one: {', '.join(CONFIGS)}"
                        " (default: the default fleet, btrfs job storage, then tmpfs job mounts"
                        " like the bare side's)")
    p.add_argument("--runtime", default="",
                   help="OCI runtime of every side, e.g. crun (default: AIRLOCK_RUNTIME, else"
                        " the engine's default)")
    p.add_argument("--peers", action="store_true",
                   help="also epicbox and llm-sandbox (pip install '.[peers]'), same jobs, same image")
    p.add_argument("--peer-jobs", type=int, default=40, help="peers' jobs per throughput level")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in str(args.levels).split(",")]
    args.configs = [c for c in str(args.configs).split(",") if c]
    unknown = set(args.configs) - CONFIGS.keys()
    if unknown or not args.configs:
        p.error(f"--configs: unknown {sorted(unknown)}")
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
