"""Redis with Sentinel on loopback ports, of a test's own: a primary, a replica, three
Sentinels (quorum 2) watching them as "airlock". Never the machine's shared 6379."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.faults.rig import RedisServer, free_port, wait_for

MASTER = "airlock"


class SentinelSet:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.primary = RedisServer(workdir / "primary", appendonly=True)
        self.replica: RedisServer | None = None
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}" for p in self.ports) + "/0"

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica = RedisServer(self.dir / "replica", appendonly=True, args=(
            "--replicaof", "127.0.0.1", str(self.primary.port))).start()
        for i, port in enumerate(self.ports):
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"logfile {self.dir / f'sentinel-{i}.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n")
            self.procs.append(subprocess.Popen(
                ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for("the Sentinels to know the replica and each other", self._settled, 30, 0.2)
        return self

    def _ask(self, port: int, *command: str) -> object:
        r = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
        try:
            return r.execute_command(*command)
        except redis.exceptions.RedisError:
            return None
        finally:
            r.close()

    def _settled(self) -> bool:
        for port in self.ports:
            replicas = self._ask(port, "SENTINEL", "REPLICAS", MASTER)
            peers = self._ask(port, "SENTINEL", "SENTINELS", MASTER)
            if not replicas or not isinstance(peers, list) or len(peers) < 2:
                return False
        return True

    def primary_port(self) -> int | None:
        found = self._ask(self.ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(found[1]) if isinstance(found, list) and found else None

    def kill_primary(self) -> None:
        """SIGKILL the primary: the Sentinels promote the replica."""
        self.primary.kill()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if self.replica is not None:
            self.replica.stop()
        self.primary.stop()
