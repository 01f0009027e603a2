"""Engine calls per job on Airlock's container path, and when the result is known.

    python bench/engine_calls.py         # 20 trivial jobs each way, about 10 s

Runs trivial jobs through ``workers.runner`` (the worker's own create arguments, cold, this
host's default storage) and counts the calls ``workers.engine.SocketCalls`` makes, by verb and
route, with the engine's wait for the container's exit (as before the sixth session) and
without it (a job whose launcher said it exited 0: the result no longer waits for the exit);
and times the run until the result is known, and the removal after it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.seccomp import profile_sha256  # noqa: E402
from config.settings import Settings  # noqa: E402
from tasks.context import host_slots  # noqa: E402
from tasks.contract import resolve  # noqa: E402
from tasks.planning import HostFacts, payload_for, plan_for  # noqa: E402
from workers import engine, runner  # noqa: E402
from workers.storage import volumes_for  # noqa: E402

ID = re.compile(r"/containers/[0-9a-f]{64}")


def measure(jobs: int, wait_exit: bool) -> dict[str, Any]:
    s = Settings()
    host = HostFacts(s.seccomp_json, profile_sha256(s.seccomp_json))
    job = resolve({"code": "print(6*7)"}, s)[1]
    volumes = volumes_for(s.storage, s.sandbox.volumes_root)
    api = engine.connect(None)
    slots = host_slots(s, engine.engine_id(api))
    calls: Counter[str] = Counter()
    original = engine.SocketCalls.request

    def counted(self: engine.SocketCalls, method: str, path: str, *a: Any, **k: Any) -> Any:
        calls[f"{method} {ID.sub('/containers/ID', path.split('?')[0])}"] += 1
        return original(self, method, path, *a, **k)

    engine.SocketCalls.request = counted  # type: ignore[method-assign]
    known, removal = [], []
    try:
        for _ in range(jobs):
            name, now = f"airlock-calls-{uuid.uuid4().hex[:10]}", time.time()
            plan = plan_for(s, host, job, name=name, uid=slots.take(name, now).uid, now=now)
            sandbox = runner.prepare(api, plan, volumes, slots)
            time.sleep(0.1)  # a warm container, started ahead
            t = time.perf_counter()
            try:
                out = runner.run(sandbox, payload_for(job, s), job.limits, keep_bytes=2**20,
                                 volumes=volumes, wait_exit=wait_exit)
                known.append((time.perf_counter() - t) * 1000)
            finally:
                t = time.perf_counter()
                runner.destroy(sandbox, volumes)
                removal.append((time.perf_counter() - t) * 1000)
            if out.stdout != b"42\n":
                raise RuntimeError(f"the job failed: {out}")
    finally:
        engine.SocketCalls.request = original  # type: ignore[method-assign]
        api.close()
    return {"calls_per_job": {k: v / jobs for k, v in sorted(calls.items())},
            "total_per_job": sum(calls.values()) / jobs,
            "result_known_ms": statistics.median(known), "removal_ms": statistics.median(removal)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=20)
    args = p.parse_args(argv)
    for wait_exit in (True, False):
        r = measure(args.jobs, wait_exit)
        print(f"{'with' if wait_exit else 'without'} the engine's wait: {r['total_per_job']:.1f}"
              f" calls a job ({', '.join(f'{k} {v:g}' for k, v in r['calls_per_job'].items())});"
              f" result known after {r['result_known_ms']:.1f} ms, removal"
              f" {r['removal_ms']:.1f} ms (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
