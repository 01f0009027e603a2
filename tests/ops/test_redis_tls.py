"""A rediss:// broker URL with Airlock's transport: TLS, the server's certificate verified
(docs/operations.md). A redis-server of the test's own speaks TLS only, with a certificate
from a CA made here: unknown to the system, so a verifying client refuses it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

from config.settings import Settings
from tasks.app import celery_config
from tests.faults.rig import free_port, wait_for

pytestmark = [pytest.mark.integration]


def make_certificates(folder: Path) -> None:
    """A CA, and a certificate it signs for 127.0.0.1."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")


def answers(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    make_certificates(tmp_path)
    port, ca = free_port(), tmp_path / "ca.pem"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "server.pem"), "--tls-key-file",
         str(tmp_path / "server.key"), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    probe = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca),
                        socket_connect_timeout=1)
    try:
        wait_for("redis-server to answer over TLS", lambda: answers(probe), 10)
        yield port, ca
    finally:
        probe.close()
        proc.kill()
        proc.wait(10)


def airlock_connection(url: str) -> Connection:
    app = Celery("tls-test", set_as_current=False)
    app.conf.update(celery_config(Settings(broker_url=url, queue="airlock-tls")))
    conn: Connection = app.connection_for_write()
    return conn


def test_the_servers_certificate_is_verified(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    # Not signed by a CA the system knows: refused.
    with airlock_connection(f"rediss://127.0.0.1:{port}/0") as conn, \
            pytest.raises(OperationalError, match="certificate verify failed"):
        conn.default_channel.client.ping()
    # The CA named in the URL: a message goes through the queue over TLS.
    with airlock_connection(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}") as conn:
        assert type(conn.transport).__module__ == "tasks.broker"
        queue = conn.SimpleQueue("airlock-tls")
        queue.put({"over": "tls"})
        message = queue.get(timeout=5)
        assert message.payload == {"over": "tls"}
        message.ack()
        queue.close()
    # kombu's own transport with a bare rediss:// URL: connected without verifying.
    with Connection(f"rediss://127.0.0.1:{port}/0") as conn:
        assert conn.default_channel.client.ping()
