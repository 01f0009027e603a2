"""Measure the live-output relay: runner wall time with no sink, a counting sink, and the Redis
publisher; and a bare ``docker run`` of the same image printing the same bytes.

    python scripts/bench_streaming.py [--repeat 3] [--modes none,count,publish]

Runs containers directly through workers.runner (no Celery, no PostgreSQL) under a throwaway
fleet label; every container is removed in a finally. Prints one line per run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable

from config.settings import MiB, Settings
from tasks import streams
from tasks.context import build_context
from tasks.contract import resolve
from tasks.execute import payload_for, plan_for
from tasks.relay import Relay
from workers import runner

JOBS = {
    "big": "import sys\nb = b'x' * 2**20\nfor _ in range(64): sys.stdout.buffer.write(b)",
    "lines": "import sys\nline = b'y' * 99 + b'\\n'\nw = sys.stdout.buffer.write\n"
             "for _ in range(671088): w(line)",
}


def run_once(ctx: object, relay: Relay, s: Settings, code: str, mode: str) -> dict[str, float]:
    from tasks.context import WorkerContext

    assert isinstance(ctx, WorkerContext)
    _, job = resolve({"code": code, "limits": {"output_bytes": 64 * MiB, "timeout_s": 60}}, s)
    job_id = str(uuid.uuid4())
    chunks = 0
    size = 0
    spent = 0.0
    key = streams.output_key(job_id)
    publisher = relay.publisher(job_id)
    written = relay.written_entries
    relay.buffer.high_water = 0

    def sync_xadd(stream: str, data: bytes) -> None:  # the first version: XADD on the read loop
        ctx.redis.xadd(key, {"t": stream, "d": data}, maxlen=s.streams.maxlen, approximate=True)

    def sink(stream: str, data: bytes) -> None:
        nonlocal chunks, size, spent
        chunks += 1
        size += len(data)
        if mode in ("sync", "relay"):
            t = time.perf_counter()
            (sync_xadd if mode == "sync" else publisher.chunk)(stream, data)
            spent += time.perf_counter() - t

    plan = plan_for(ctx, job, name=f"airlock-bench-{job_id[:8]}", job_id=job_id, attempt=1)
    sandbox = runner.prepare(ctx.api, plan, ctx.volumes)
    try:
        out = runner.run(sandbox, payload_for(job), job.limits, keep_bytes=s.caps.keep_output_bytes,
                         sink=None if mode == "none" else sink, volumes=ctx.volumes)
        t = time.perf_counter()
        if mode == "relay":
            publisher.end({"verdict": "ok"})
        flush_ms = (time.perf_counter() - t) * 1000
    finally:
        runner.destroy(sandbox, ctx.volumes)
        ctx.redis.delete(key, streams.done_key(job_id))
    total = out.stdout_total
    return {"wall_ms": out.wall_ms, "bytes": total, "chunks": chunks, "flush_ms": flush_ms,
            "entries": relay.written_entries - written, "skipped": publisher.skipped_total,
            "high_water": relay.buffer.high_water,
            "mean_chunk": size / chunks if chunks else 0, "sink_ms": spent * 1000,
            "per_chunk_us": spent * 1e6 / chunks if chunks else 0}


def bare(code: str) -> float:
    t = time.monotonic()
    subprocess.run(["docker", "run", "--rm", "-i", "--network=none", "airlock/sandbox:latest",
                    "python3", "-u", "-c", code], stdout=subprocess.DEVNULL, check=True)
    return (time.monotonic() - t) * 1000


LATENCY_JOB = ("import time\nfor i in range(40):\n"
               "    print(f'{time.time():.6f}', flush=True)\n    time.sleep(0.05)\n")


def live(repeat: int) -> None:
    """Through a real worker and the client: per-line latency and the client's read rate."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from airlock.client import Airlock
    from tests.services import ROOT, WorkerProcess, scratch_database

    with scratch_database("airlock_bench") as url:
        s = Settings(database_url=url, fleet=f"bench-{uuid.uuid4().hex[:6]}",
                     queue=f"airlock-bench-{uuid.uuid4().hex[:6]}", concurrency=1)
        worker = WorkerProcess(s, ROOT / "artifacts" / f"bench-worker-{s.fleet}.log").start()
        client = Airlock(s)
        try:
            client.submit({"code": "print(1)"}).wait(60)  # warm: the worker process exists
            latencies: list[float] = []
            firsts: list[float] = []
            for _ in range(repeat):
                handle = client.submit({"code": LATENCY_JOB})
                pending, first = b"", True
                for event in handle.events():
                    now = time.time()
                    if event.kind != "stdout":
                        continue
                    pending += event.data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        latencies.append((now - float(line)) * 1000)
                        if first:
                            firsts.append(latencies[-1])
                            first = False
                client.redis.delete(streams.output_key(handle.id))
            latencies.sort()
            print(f"latency ms over {len(latencies)} lines: median={statistics.median(latencies):.1f}"
                  f" p95={latencies[int(len(latencies) * 0.95)]:.1f} max={latencies[-1]:.1f};"
                  f" first line of each job: {[round(f, 1) for f in firsts]}")
            for _ in range(repeat):
                handle = client.submit({"code": JOBS["big"], "limits": {"output_bytes": 64 * MiB}})
                got, t_first, skipped = 0, 0.0, 0
                for event in handle.events():
                    if event.kind == "stdout":
                        t_first = t_first or time.monotonic()
                        got += len(event.data)
                    elif event.kind == "lagging":
                        skipped += sum(event.summary.values())
                t_end = time.monotonic()
                record = handle.wait(30)
                client.redis.delete(streams.output_key(handle.id))
                print(f"client read {got / MiB:.1f} MiB (+{skipped} skipped) in"
                      f" {(t_end - t_first) * 1000:.0f} ms from first byte to end:"
                      f" {got / MiB / (t_end - t_first):.0f} MiB/s; job wall {record.wall_ms} ms")
        finally:
            client.close()
            worker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="none,count,sync,relay")
    ap.add_argument("--jobs", default="big,lines")
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--live", action="store_true", help="through a worker and the client")
    args = ap.parse_args()
    if args.live:
        live(args.repeat)
        return
    s = Settings(fleet=f"bench-{uuid.uuid4().hex[:6]}")
    ctx = build_context(s)
    relay = Relay.for_settings(ctx.redis, s)
    report: Callable[..., None] = print
    modes = args.modes.split(",")
    for name in args.jobs.split(","):
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits every mode alike
            for mode in modes:
                runs[mode].append(run_once(ctx, relay, s, JOBS[name], mode))
        for mode in modes:
            walls = [r["wall_ms"] for r in runs[mode]]
            skipped = [r["skipped"] for r in runs[mode]]
            last = runs[mode][-1]
            med = statistics.median(walls)
            report(f"{name:6} {mode:6} wall_ms median={med:.0f} all={walls}"
                   f" MiB/s={last['bytes'] / MiB / (med / 1000):.0f}"
                   f" chunks={last['chunks']} mean_chunk={last['mean_chunk']:.0f}"
                   f" sink_ms={last['sink_ms']:.0f} per_chunk_us={last['per_chunk_us']:.1f}"
                   + (f" entries={last['entries']} end_flush_ms={last['flush_ms']:.0f}"
                      f" skipped_per_run={skipped} buffer_high_water={last['high_water']}"
                      if mode == "relay" else ""))
        if args.bare:
            walls, empty = [], []
            for _ in range(args.repeat):
                walls.append(bare(JOBS[name]))
                empty.append(bare("pass"))
            net = statistics.median(walls) - statistics.median(empty)
            report(f"{name:6} bare docker run > /dev/null: wall_ms median={statistics.median(walls):.0f}"
                   f" minus an empty run's {statistics.median(empty):.0f} = {net:.0f} ms,"
                   f" {64 / (net / 1000):.0f} MiB/s")

if __name__ == "__main__":
    main()
