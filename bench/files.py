"""Collecting a job's files against ``docker cp`` of the same folder from a stopped container.

    python bench/files.py                       # 100 files of 1 MiB, 7 rounds, 3 jobs
    python bench/files.py --files 10 --mib-each 10 --rounds 3 --jobs 1

Two parts, interleaved rounds so drift and neighbours' load hit both sides alike:

- **The same folder.** A container of the sandbox image writes the files into a btrfs
  subvolume like a job's (bound at /workspace) and exits: a stopped container. Each round
  copies its ``out`` folder with ``docker cp`` (the baseline here only: Airlock never uses it)
  and collects ``out/**`` from the subvolume with Airlock's collector (workers/collect.py:
  openat2 walk, fstat checks, sha256, into a spool), both to the same host disk. The
  collector's memory growth is this process's peak RSS during a round over its RSS before.
- **Through a worker.** Jobs that write the same files and collect them, through the client,
  a queue and a worker of the benchmark's own: the job's ``files_ms`` phase (the collection),
  ``persist_ms`` (compressing and storing them with the result) and the worker's peak RSS
  (its process tree, sampled every 10 ms) over its RSS before the job.

Prints the figures and the ratios (Airlock / docker cp; target <= 1.0) and writes them to
bench/results/files-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from airlock.client import Airlock  # noqa: E402
from config.settings import MiB, Settings  # noqa: E402
from tests.services import WorkerProcess, scratch_database, tree_rss  # noqa: E402
from workers import collect  # noqa: E402
from workers.collecting import CollectCaps  # noqa: E402
from workers.spool import Spool  # noqa: E402
from workers.storage import BtrfsVolumes  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WRITE = ("import os\nos.makedirs('/workspace/out', exist_ok=True)\n"
         "for i in range({files}):\n"
         "    open(f'/workspace/out/f{{i:03d}}.bin', 'wb').write(os.urandom({each}))\n")


class PeakRss:
    """The peak RSS of a process (with its children, if asked) since the last ``mark``."""

    def __init__(self, pid: int, every_s: float = 0.01, children: bool = True) -> None:
        self.proc = psutil.Process(pid)
        self.every_s, self.children, self.top = every_s, children, 0
        self.lock = threading.Lock()
        self.generation = 0
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def rss(self) -> int:
        return tree_rss(self.proc.pid, self.children)

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            generation = self.generation
            seen = self.rss()
            with self.lock:  # a sample taken before a mark does not count after it
                if generation == self.generation:
                    self.top = max(self.top, seen)

    def mark(self) -> int:
        with self.lock:
            self.generation += 1
            base = self.top = self.rss()
        return base

    def growth(self, base: int) -> int:
        time.sleep(2 * self.every_s)
        return max(self.top, self.rss()) - base


def docker_cp(container: str, dest: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "cp", f"{container}:/workspace/out", str(dest)], check=True,
                   capture_output=True, timeout=300)
    return time.perf_counter() - t


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def same_folder(s: Settings, files: int, each: int, rounds: int) -> dict[str, Any]:
    volumes = BtrfsVolumes(s.sandbox.volumes_root)
    volumes.check()
    name = f"airlock-bench-files-{os.getpid()}"
    uid = s.sandbox.job_uids[0]
    volume = volumes.create(name, 4 * files * each + 256 * MiB, uid)
    work = Path(s.sandbox.spool_dir).parent / f"airlock-bench-{os.getpid()}"
    work.mkdir(mode=0o700, parents=True)
    caps = CollectCaps(files=files, file_bytes=each, total_bytes=files * each,
                       refusals_listed=100, walk_entries=1_000_000, time_s=60.0)
    watch = PeakRss(os.getpid(), every_s=0.005, children=False)  # the collector runs here
    container = f"airlock-bench-cp-{os.getpid()}"
    cp_s: list[float] = []
    ours_s: list[float] = []
    growth: list[int] = []
    try:
        assert volume.path is not None
        subprocess.run(["docker", "run", "--name", container, "--user", f"{uid}:{uid}",
                        "--network", "none", "-v", f"{volume.path / 'workspace'}:/workspace",
                        s.profiles["python"].image, "python3", "-c",
                        WRITE.format(files=files, each=each)],
                       check=True, capture_output=True, timeout=300)  # then it is stopped
        for i in range(rounds):
            dest = work / f"cp-{i}"
            dest.mkdir()
            cp_s.append(docker_cp(container, dest))
            if tree_bytes(dest) != files * each:
                raise RuntimeError("docker cp copied a different number of bytes")
            shutil.rmtree(dest)

            spool = Spool(str(work), f"spool-{i}").open()
            base = watch.mark()
            t = time.perf_counter()
            got = collect.from_volume(volume.path, ("out/**",), caps, spool)
            ours_s.append(time.perf_counter() - t)
            growth.append(watch.growth(base))
            spool.remove()
            if len(got.collected) != files or got.summary()["bytes"] != files * each:
                raise RuntimeError(f"collected {got.summary()}")
    finally:
        watch.stop.set()
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
        volumes.destroy(volume)
        shutil.rmtree(work, ignore_errors=True)
    return {"docker_cp_s": cp_s, "collect_s": ours_s, "collect_growth_bytes": growth}


def through_worker(files: int, each: int, jobs: int) -> dict[str, Any]:
    with scratch_database("airlock_bench_files") as url:
        tag = uuid.uuid4().hex[:8]
        s = Settings(database_url=url, fleet=f"bench-files-{tag}", queue=f"airlock-bench-{tag}",
                     concurrency=1, pool_size=0)
        RESULTS.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(s, RESULTS / f"files-worker-{tag}.log").start()
        client = Airlock(s)
        watch = PeakRss(worker.pid)
        out: dict[str, list[float]] = {"files_ms": [], "persist_ms": [], "worker_growth_bytes": []}
        try:
            for _ in range(jobs):
                base = watch.mark()
                record = client.submit(code=WRITE.format(files=files, each=each),
                                       collect=["out/**"],
                                       limits={"timeout_s": 120}).wait(300)
                out["worker_growth_bytes"].append(watch.growth(base))
                if record.verdict != "ok" or (record.files or {}).get("collected") != files:
                    raise RuntimeError(f"job: {record.summary()} {record.files}")
                row = client.files(record.id)[0]
                data = b"".join(client.read_file(record.id, row))
                if hashlib.sha256(data).hexdigest() != row.sha256:
                    raise RuntimeError("a stored file does not match its sha256")
                phases = record.phases or {}
                for _ in range(50):  # persist_ms is added just after the result is announced
                    if "persist_ms" in phases:
                        break
                    time.sleep(0.1)
                    phases = client.result(record.id).phases or {}
                out["files_ms"].append(phases["files_ms"])
                out["persist_ms"].append(phases["persist_ms"])
        finally:
            watch.stop.set()
            client.close()
            worker.stop()
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--mib-each", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args(argv)
    s = Settings()
    each = args.mib_each * MiB
    folder = same_folder(s, args.files, each, args.rounds)
    worker = through_worker(args.files, each, args.jobs) if args.jobs else {}
    cp, ours = statistics.median(folder["docker_cp_s"]), statistics.median(folder["collect_s"])
    growth = max(folder["collect_growth_bytes"])
    total_mib = args.files * args.mib_each
    print(f"collecting {total_mib} MiB in {args.files} files, median of {args.rounds} rounds")
    print(f"  docker cp (stopped container)   {cp * 1000:8.1f} ms")
    print(f"  Airlock's collector             {ours * 1000:8.1f} ms   ratio {ours / cp:.2f}"
          f"   memory growth {growth / MiB:.1f} MiB")
    if worker:
        files_ms = statistics.median(worker["files_ms"])
        persist_ms = statistics.median(worker["persist_ms"])
        wgrowth = max(worker["worker_growth_bytes"])
        print(f"  through a worker: files_ms {files_ms:.0f} (ratio {files_ms / 1000 / cp:.2f} to"
              f" docker cp), persist_ms {persist_ms:.0f} (zstd + PostgreSQL, with the result),"
              f" worker growth {wgrowth / MiB:.1f} MiB")
    verdict = ours <= cp and growth < 50 * MiB and (not worker or wgrowth < 50 * MiB)
    print(f"  target (at least as fast as docker cp, under 50 MiB growth): "
          f"{'met' if verdict else 'NOT met'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"files-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"files": args.files, "mib_each": args.mib_each,
                                "same_folder": folder, "through_worker": worker}, indent=2))
    print(f"  figures: {path}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
