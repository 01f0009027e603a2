"""F16: a hundred jobs printing 20 MB each: the worker's memory plateaus.

The live output goes to a Redis server of the test's own (the streams expire a few seconds
after each job, so that server stays small too); the worker's resident memory (main process
plus pool processes) is sampled as the jobs finish.
"""

from __future__ import annotations

import time

import psutil
import pytest

from tests.faults.conftest import MakeRedis
from tests.faults.rig import Fleet

pytestmark = [pytest.mark.faults, pytest.mark.integration]
JOBS, MB = 100, 20
MiB = 1024**2
CODE = f"import sys\nline = b'x' * {MiB - 1} + b'\\n'\nfor _ in range({MB}): sys.stdout.buffer.write(line)\n"


def rss(pid: int) -> int:
    main = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [main, *main.children()])


def test_f16_hundreds_of_jobs_printing_tens_of_mb(fleet: Fleet, make_redis: MakeRedis) -> None:
    redis = make_redis(appendonly=False)
    fleet.configure(broker_url=redis.url, redis_url=redis.url, concurrency=2, stream_ttl_s=1)
    w = fleet.worker()
    jobs = [fleet.submit(CODE, output_bytes=(MB + 4) * MiB, timeout_s=60) for _ in range(JOBS)]
    samples: list[tuple[int, int]] = []  # (jobs finished, worker RSS)
    deadline = time.monotonic() + 240
    done = 0
    while done < JOBS and time.monotonic() < deadline:
        done = fleet.sql("SELECT count(*) FROM jobs WHERE status = 'finished'")[0][0]
        samples.append((done, rss(w.pid)))
        time.sleep(0.25)
    assert done == JOBS, f"only {done} of {JOBS} finished"
    early = max(r for n, r in samples if n <= JOBS // 5)
    late = max(r for n, r in samples if n >= JOBS // 2)
    print(f"worker RSS: {early / MiB:.0f} MiB by job {JOBS // 5}, at most {late / MiB:.0f} MiB"
          f" after job {JOBS // 2}; {JOBS * MB} MB printed")
    assert late - early < 32 * MiB, (early, late)
    records = [fleet.record(j) for j in jobs]
    assert all(r.verdict == "ok" and r.stdout_total == MB * MiB for r in records), \
        [(r.verdict, r.stdout_total) for r in records if r.verdict != "ok"][:3]
    assert not fleet.leftovers()
