"""``airlock worker``: checks the host and its services, runs the preflight, then serves jobs.

Only starts things: each step lives in its own module (``tasks.startup``, ``tasks.preflight``,
``tasks.housekeeping``, ``tasks.signals``, ``tasks.jobs``).
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

from base.errors import AirlockError
from config.settings import Settings
from tasks import metrics, preflight, signals, startup
from tasks.app import app, configure
from tasks.housekeeping import Housekeeping, clear_pool

EXIT_REFUSED = 3


def refuse(reason: str) -> NoReturn:
    print(f"airlock worker: refusing to start: {reason}", file=sys.stderr)
    sys.exit(EXIT_REFUSED)


def start_worker(s: Settings, *, concurrency: int | None = None,
                 extra: list[str] | None = None) -> None:
    if concurrency:
        s = s.but(concurrency=concurrency)
    try:
        s = startup.check_host(s)
        wait_s = s.membership.control_plane_wait_s  # then refused, in one line
        startup.check_database(s, wait_s)
        startup.check_redis(s, wait_s)
    except AirlockError as exc:
        refuse(str(exc))
    except Exception as exc:  # the engine's or a library's own error: still one line
        refuse(f"{type(exc).__name__}: {exc}")
    _serve_metrics(s)
    _preflight(s)
    configure(s)
    import tasks.jobs  # noqa: F401 - registers the task on the app

    signals.connect(s, Housekeeping(s))
    quiet = ["--quiet"] if s.log_format == "json" else []  # Celery's banner is not JSON
    argv = [*quiet, "worker", "-Q", s.queue, "-c", str(s.concurrency), "-n", f"airlock@{s.hostname}",
            "--loglevel=INFO", "-E", "-O", "fair", "--without-mingle", "--without-gossip",
            *(extra or [])]
    _share_heap()
    try:
        app.worker_main(argv)
    finally:  # a cold shutdown sends no worker_shutdown: its children's warm containers go here
        if s.pool.size > 0 or s.holders.mode != "off":
            clear_pool(s)


def _share_heap() -> None:
    """Keep what the main process holds before the pool forks shared with its children: a
    frozen object is never visited by a collection, so a child's collections no longer write
    to (and so copy) every page of the modules it inherited."""
    gc.collect()
    gc.freeze()


def _serve_metrics(s: Settings) -> None:
    if s.metrics.port is None:
        return
    try:
        metrics.enable(metrics.prepare_directory(s.metrics.dir))  # before the pool forks
        metrics.serve(s.metrics.port, s.metrics.address)
    except OSError as exc:
        refuse(f"metrics endpoint: {exc}")


def _preflight(s: Settings) -> None:
    """Canary jobs through the runner: is a job contained on this host?"""
    checked = preflight.run(s)
    metrics.set_preflight(checked.ok)
    for canary in (*checked.canaries, *checked.inner.values()):
        metrics.set_preflight(canary.contained, canary.name)
    if not checked.ok:
        refuse(f"preflight: {'; '.join(checked.failures)}")
    print(f"airlock worker: {checked.summary()}", file=sys.stderr)
    for profile in s.inner_sandbox_profiles:
        why = checked.inner_refusal(profile)
        if why is not None:
            print(f"airlock worker: profile {profile}: the inner sandbox does not hold here;"
                  f" its jobs will be refused: {why}", file=sys.stderr)
    for name, line in checked.runtime.items():
        if not line.startswith("ok"):
            print(f"airlock worker: {name}: {line}", file=sys.stderr)
