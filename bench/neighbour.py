"""The noisy neighbour: a CPU-bound ``--cpus 1`` job's wall time alone, and next to a busy
``--cpus 1`` neighbour, with dynamic cpusets on and off (``AIRLOCK_CPUSET``).

    python bench/neighbour.py            # about 2 minutes on 2 cores
    python bench/neighbour.py --rounds 2 --jobs 3

Two workers (cpuset on, cpuset off), each of two processes; the two configurations alternate
round by round, so that the host's other load hits both alike. A round runs ``--jobs`` CPU-bound
jobs one after another alone, then starts a neighbour that spins for as long as needed and runs
as many again beside it, then cancels the neighbour. The job's own ``wall_ms`` (its container's
run, not the queue or the client) is the figure: medians, and the ratio beside / alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import CPU_BOUND, CPU_BOUND_OUT, RESULTS, airlock_worker  # noqa: E402

from airlock.client import Airlock  # noqa: E402

BUSY = "import time\nend = time.time() + 120\nwhile time.time() < end:\n    pass"


def cpu_job(client: Airlock) -> tuple[float, str]:
    """One CPU-bound job's wall time (ms) and the cores it was given."""
    record = client.submit({"code": CPU_BOUND, "limits": {"cpus": 1}}).wait(120)
    if record.stdout != CPU_BOUND_OUT or record.wall_ms is None:
        raise RuntimeError(f"the CPU-bound job failed: {record.summary()}")
    return float(record.wall_ms), str((record.provenance or {}).get("cpuset"))


def round_of(client: Airlock, jobs: int) -> dict[str, Any]:
    alone = [cpu_job(client) for _ in range(jobs)]
    neighbour = client.submit({"code": BUSY, "limits": {"cpus": 1, "timeout_s": 150}})
    try:
        time.sleep(1.0)  # the neighbour spinning
        beside = [cpu_job(client) for _ in range(jobs)]
    finally:
        neighbour.cancel()
    record = neighbour.wait(60)
    return {"alone_ms": [a[0] for a in alone], "beside_ms": [b[0] for b in beside],
            "cores": [b[1] for b in beside],
            "neighbour_cores": str((record.provenance or {}).get("cpuset"))}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    opts = argparse.Namespace(concurrency=2, levels=[2], pool_size=1, runtime="")
    out: dict[str, dict[str, list[Any]]] = {}
    tag = f"nb{int(time.time()) % 100000}"
    with airlock_worker(opts, "default", tag) as (on, _), \
            airlock_worker(opts, "nocpuset", tag) as (off, _):
        clients = {"on": Airlock(on), "off": Airlock(off)}
        try:
            for name, client in clients.items():  # warm-up
                cpu_job(client)
                out[name] = {"alone_ms": [], "beside_ms": [], "cores": [], "neighbour_cores": []}
            for i in range(args.rounds):
                for name in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    got = round_of(clients[name], args.jobs)
                    for key, value in got.items():
                        out[name][key] += value if isinstance(value, list) else [value]
                    print(f"  round {i + 1}, cpuset {name}: alone"
                          f" {statistics.median(got['alone_ms']):.0f} ms, beside a neighbour"
                          f" {statistics.median(got['beside_ms']):.0f} ms", flush=True)
        finally:
            for c in clients.values():
                c.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--jobs", type=int, default=5, help="CPU-bound jobs alone and beside, a round")
    args = p.parse_args(argv)
    result = measure(args)
    print("\n| cpuset | alone, median ms | beside a busy neighbour, median ms | ratio |")
    print("|---|---|---|---|")
    for name, r in result.items():
        alone, beside = statistics.median(r["alone_ms"]), statistics.median(r["beside_ms"])
        print(f"| {name} | {alone:.0f} | {beside:.0f} | {beside / alone:.2f} |")
    on = result["on"]
    per_round = len(on["cores"]) // max(1, len(on["neighbour_cores"]))
    apart = sum(1 for n, theirs in enumerate(on["neighbour_cores"])
                for ours in on["cores"][n * per_round:(n + 1) * per_round]
                if set(ours.split(",")).isdisjoint(theirs.split(",")))
    print(f"cpuset on: {apart} of {len(on['cores'])} jobs beside the neighbour on cores"
          " disjoint from its own")
    out = RESULTS / f"neighbour-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
