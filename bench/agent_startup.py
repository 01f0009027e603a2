"""An agent job's start-up against a python job's, side by side, through a real worker.

    python bench/agent_startup.py            # 15 runs of each, interleaved (about 2 minutes)
    python bench/agent_startup.py --runs 3   # smoke

Starts its own ``airlock worker`` (a scratch database, its own fleet and queue, no warm pool:
both sides start cold, since an agent profile is never pooled) and measures, interleaved so
that the neighbours' load hits all alike, end to end (the client's submit to the stored result):

- ``python``: a trivial job (``print(6*7)``) of the python profile;
- ``agent``: the same job in the agent profile: its image (the SDK, its CLI, Node, srt), its
  seccomp profile, its unmasked /proc, the sandbox settings the worker writes;
- ``agent + inner sandbox``: an agent job running one command through the inner sandbox
  (``srt`` with Airlock's settings: what a first tool command costs, Node's start included);
- ``agent + SDK import``: an agent job importing the Claude Agent SDK.

Prints medians, p95 and each side's ratio to the python job; writes bench/results/agent-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/agent_startup.py` from a checkout

from airlock.client import Airlock  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests.services import WorkerProcess, scratch_database  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIDES: dict[str, dict[str, Any]] = {
    "python": {"code": "print(6*7)"},
    "agent": {"code": "print(6*7)", "profile": "agent"},
    "agent + inner sandbox": {"profile": "agent", "argv": [
        "srt", "--settings", "/etc/airlock/srt-settings.json", "-c", "python3 -c 'print(6*7)'"]},
    "agent + SDK import": {"code": "import claude_agent_sdk\nprint(6*7)", "profile": "agent"},
}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p95(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if xs else float("nan")


def one(client: Airlock, spec: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    record = client.submit(spec | {"limits": {"timeout_s": 60}}).wait(120)
    took = (time.monotonic() - t0) * 1000
    if record.verdict != "ok" or record.stdout != "42\n":
        raise SystemExit(f"{spec}: {record.summary()} {record.stderr[-500:]!r}")
    return took, dict(record.phases or {})


def measure(runs: int) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with scratch_database("airlock_bench") as url:
        tag = uuid.uuid4().hex[:8]
        s = Settings(database_url=url, fleet=f"bench-{tag}", queue=f"airlock-bench-{tag}",
                     concurrency=1, pool_size=0, storage="tmpfs", log_format="json")
        worker = WorkerProcess(s, RESULTS / f"worker-agent-{tag}.log", AIRLOCK_LOG_FORMAT="json").start()
        client = Airlock(s)
        try:
            for spec in SIDES.values():  # warm the page cache of each image once
                one(client, spec)
            samples: dict[str, list[float]] = {name: [] for name in SIDES}
            phases: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
            for i in range(runs):
                order = list(SIDES) if i % 2 == 0 else list(reversed(SIDES))
                for name in order:
                    took, seen = one(client, SIDES[name])
                    samples[name].append(took)
                    phases[name].append(seen)
        finally:
            client.close()
            worker.stop()
    return {"runs": runs, "samples_ms": samples, "phases": phases,
            "preflight": preflight_line(worker.log())}


def preflight_line(log: str) -> str:
    return next((line for line in log.splitlines() if "preflight ok" in line), "")


def table(r: dict[str, Any]) -> str:
    base = median(r["samples_ms"]["python"])
    lines = [f"{'job (end to end, cold)':<24} {'median ms':>10} {'p95 ms':>8} {'ratio':>6}"
             f" {'ready ms':>9} {'run ms':>7}"]
    for name, xs in r["samples_ms"].items():
        ready = median([float(p.get("container_ready_ms", "nan")) for p in r["phases"][name]])
        run = median([float(p.get("run_ms", "nan")) for p in r["phases"][name]])
        lines.append(f"{name:<24} {median(xs):>10.1f} {p95(xs):>8.1f} {median(xs) / base:>6.2f}"
                     f" {ready:>9.0f} {run:>7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="jobs of each kind, interleaved")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    result = measure(args.runs)
    result["seconds"] = round(time.monotonic() - t0, 1)
    out = RESULTS / f"agent-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(table(result))
    agent = median(result["samples_ms"]["agent"]) / median(result["samples_ms"]["python"])
    print(f"agent job start-up / python job start-up: {agent:.2f}x "
          f"({args.runs} runs each, {result['seconds']} s; figures: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
