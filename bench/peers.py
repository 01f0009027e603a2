"""Two peer libraries in the benchmark's run (``bench/run.py --peers``, the ``peers`` extra):
epicbox and llm-sandbox, each running the same jobs on one local image, never pulling.

The image is ``airlock/sandbox:latest`` with ``python`` on PATH (llm-sandbox runs ``python``),
built here once. Each peer is used the way its README shows, with what it needs to run at all:
- epicbox 1.1.0 builds urllib3's ``Retry`` with ``method_whitelist``, which urllib3 2 renamed
  ``allowed_methods``: a subclass translating it is put in epicbox's module (this process only);
- llm-sandbox gets ``skip_environment_setup`` (no pip install into the image) and
  ``init: True``: it ends a session with ``docker stop``, and a PID 1 ``python3`` (the image's
  command) ignores SIGTERM, so every job would wait out the stop's 10 s.

``hardening`` inspects a live container of each and tabulates what it applied.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

PEER_IMAGE = "airlock/bench-peer:latest"
DOCKERFILE = ("FROM airlock/sandbox:latest\nUSER root\n"
              "RUN ln -sf /usr/bin/python3 /usr/local/bin/python\nUSER 1000:1000\n")
EPICBOX_PREFIX = "epicbox-"


def ensure_image() -> str:
    """The peers' image, built from the sandbox image if missing (no network needed)."""
    have = subprocess.run(["docker", "image", "inspect", PEER_IMAGE], capture_output=True)
    if have.returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", PEER_IMAGE, "-"], input=DOCKERFILE.encode(),
                       check=True, capture_output=True)
    return PEER_IMAGE


def _quiet_structlog() -> None:
    """epicbox logs every call through structlog at info: warnings only, in this process."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class Epicbox:
    name = "epicbox"

    def __init__(self, image: str) -> None:
        import epicbox
        import epicbox.utils
        from urllib3.util.retry import Retry

        class _Retry(Retry):  # the shim: urllib3 2 renamed method_whitelist
            def __init__(self, *args: Any, method_whitelist: Any = None, **kwargs: Any) -> None:
                if method_whitelist is not None:
                    kwargs.setdefault("allowed_methods", method_whitelist)
                super().__init__(*args, **kwargs)

        epicbox.utils.Retry = _Retry  # type: ignore[attr-defined]
        epicbox.configure(profiles=[epicbox.Profile("python", image)])
        _quiet_structlog()
        self.epicbox = epicbox

    def run(self, code: str) -> str:
        result = self.epicbox.run("python", shlex.join(["python3", "-c", code]),
                                  limits={"cputime": 60, "realtime": 120, "memory": 1024})
        if result["exit_code"] != 0:
            raise RuntimeError(f"epicbox run failed: {result}")
        return bytes(result["stdout"]).decode()


class LlmSandbox:
    name = "llm-sandbox"

    def __init__(self, image: str) -> None:
        import docker
        from llm_sandbox import SandboxSession

        self.session, self.image = SandboxSession, image
        self.client = docker.from_env()
        self.live: list[str] = []  # container ids of sessions open now (for the inspection)

    def run(self, code: str) -> str:
        with self.session(lang="python", image=self.image, client=self.client, keep_template=True,
                          skip_environment_setup=True, runtime_configs={"init": True},
                          verbose=False) as session:
            self.live.append(session.container.id)
            try:
                out = session.run(code)
            finally:
                self.live.remove(session.container.id)
        if out.exit_code != 0:
            raise RuntimeError(f"llm-sandbox run failed: {out}")
        return str(out.stdout)


def peers() -> list[Any]:
    image = ensure_image()
    return [Epicbox(image), LlmSandbox(image)]


# --- what each applied ---------------------------------------------------------------------


def applied(inspect: dict[str, Any]) -> dict[str, str]:
    """The hardening a container got, from ``docker inspect``."""
    hc, cfg = inspect["HostConfig"], inspect["Config"]
    opts = hc.get("SecurityOpt") or []
    seccomp = next((o.split("=", 1)[1] for o in opts if o.startswith("seccomp")), "")
    seccomp = ("engine default" if not seccomp else "unconfined" if seccomp == "unconfined"
               else "custom profile")
    memory = hc.get("Memory") or 0
    return {
        "user": cfg.get("User") or "the image's",
        "cap drop": ",".join(hc.get("CapDrop") or []) or "none",
        "cap add": ",".join(hc.get("CapAdd") or []) or "none",
        "seccomp": seccomp,
        "read-only root": "yes" if hc.get("ReadonlyRootfs") else "no",
        "network": "none" if cfg.get("NetworkDisabled") or hc.get("NetworkMode") == "none"
        else str(hc.get("NetworkMode")),
        "pids limit": str(hc.get("PidsLimit") or "none"),
        "memory": f"{memory // 2**20} MiB" if memory else "none",
        "no-new-privileges": "yes" if any(o.startswith("no-new-privileges") for o in opts) else "no",
    }


def inspect_live(start: Callable[[], object], find: Callable[[], str | None],
                 timeout: float = 30.0) -> dict[str, Any]:
    """Start a job (``start``, in a thread) and inspect its container once ``find`` names it."""
    import docker

    api = docker.APIClient(version="auto")
    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            cid = find()
            if cid:
                return dict(api.inspect_container(cid))
            time.sleep(0.05)
        raise RuntimeError("no live container to inspect")
    finally:
        thread.join(timeout)
        api.close()


def epicbox_container() -> str | None:
    import docker

    api = docker.APIClient(version="auto")
    try:
        found = api.containers(filters={"name": EPICBOX_PREFIX, "status": "running"})
        return str(found[0]["Id"]) if found else None
    finally:
        api.close()


def hardening(peer: Any, sleep_code: str) -> dict[str, str]:
    find = epicbox_container if isinstance(peer, Epicbox) else (
        lambda: peer.live[0] if peer.live else None)
    return applied(inspect_live(lambda: peer.run(sleep_code), find))
