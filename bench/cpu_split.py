"""Where a job's host CPU goes, Airlock's default fleet beside a bare ``docker run --rm``.

    python bench/cpu_split.py               # 200 jobs a side at 8 in flight, about 1 minute
    python bench/cpu_split.py --jobs 60 --lanes 4

Throughput on this 2-core host is bounded by CPU: at 8 jobs in flight both sides keep the
cores busy, so the ratio of their throughputs is the inverse ratio of their host CPU per job.
This splits that CPU by process, from ``/proc`` only (nothing is moved or changed on the host):

- the engine's long-lived daemons (dockerd, containerd), PostgreSQL, Redis, the worker's
  process tree and this process (the client side: Airlock's client, or the ``docker`` CLI,
  whose CPU counts here once each command has been waited for);
- the rest of the host's CPU in the same time (``/proc/stat``): the short-lived processes of
  each container's life (the shim, runc or crun, runc's init, the job itself) and the
  kernel's own threads.

Prints each part per job for each side, the side's total, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
import run as bench  # noqa: E402  (bench/run.py: the same bare side, client side and loop)

from config.settings import Settings  # noqa: E402
from tests.services import WorkerProcess, scratch_database  # noqa: E402

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def host_busy_ns() -> int:
    """Every CPU's time not idle nor waiting on I/O, since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) * TICK_NS


def cpu_ns(procs: Iterable[psutil.Process]) -> int:
    """Their own CPU time and that of the children they have waited for."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return int(total * 1e9)


def named(*names: str) -> Callable[[], list[psutil.Process]]:
    def find() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]
    return find


def tree(pid: int) -> Callable[[], list[psutil.Process]]:
    def find() -> list[psutil.Process]:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return find


def split(parts: dict[str, Callable[[], list[psutil.Process]]], jobs: int,
          run: Callable[[], object]) -> dict[str, float]:
    """Milliseconds of host CPU per job, by part, while ``run`` runs ``jobs`` jobs."""
    procs = {k: find() for k, find in parts.items()}  # found before: counted before and after
    before = {k: cpu_ns(v) for k, v in procs.items()}
    busy = host_busy_ns()
    run()
    busy = host_busy_ns() - busy
    out = {k: (cpu_ns(v) - before[k]) / jobs / 1e6 for k, v in procs.items()}
    out["containers and kernel (the rest)"] = busy / jobs / 1e6 - sum(out.values())
    out["total"] = busy / jobs / 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=200, help="jobs per side")
    p.add_argument("--lanes", type=int, default=8, help="jobs in flight")
    args = p.parse_args(argv)
    daemons = {"dockerd": named("dockerd"), "containerd": named("containerd"),
               "postgres": named("postgres"), "redis": named("redis-server")}
    with scratch_database("airlock_bench") as url:
        tag = uuid.uuid4().hex[:8]
        s = Settings(database_url=url, fleet=f"bench-cpu-{tag}", queue=f"airlock-bench-cpu-{tag}",
                     concurrency=args.lanes, log_format="json")
        worker = WorkerProcess(s, bench.RESULTS / f"worker-cpu-{tag}.log",
                               AIRLOCK_LOG_FORMAT="json").start()
        side = bench.Side(s)
        try:
            bench.wait_warm(s, args.lanes)
            settle = lambda: bench.wait_warm(s, args.lanes, 10.0, 0.01)  # noqa: E731
            bench.closed_loop(side.run, args.lanes, args.lanes, settle)  # warm: imports, pools
            me = lambda: [psutil.Process()]  # noqa: E731 (its children: the worker, counted apart)
            airlock = split(daemons | {"worker": tree(worker.pid), "client (this process)": me},
                            args.jobs, lambda: bench.closed_loop(side.run, args.lanes, args.jobs,
                                                                 settle))
            bare = split(daemons | {"client (this process)": me}, args.jobs,
                         lambda: bench.closed_loop(lambda _n: bench.bare_run(s), args.lanes,
                                                   args.jobs))
        finally:
            side.close()
            worker.stop()
    print(f"host CPU per job (ms), {args.jobs} trivial jobs a side, {args.lanes} in flight:")
    print(f"  {'part':36s} {'bare':>8s} {'Airlock':>8s}")
    for key in airlock:  # every part of both sides (the bare side has no worker)
        b, a = bare.get(key), airlock.get(key)
        print(f"  {key:36s} {'' if b is None else f'{b:8.1f}':>8s}"
              f" {'' if a is None else f'{a:8.1f}':>8s}")
    print(f"  bare / Airlock: {bare['total'] / airlock['total']:.2f} (the throughput ratio this"
          " CPU allows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
