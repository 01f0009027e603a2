"""A stand-in of PyPI (stdlib only): a PEP 503 simple index and its files, over HTTPS.

It exists so that no test sends traffic to the real pypi.org: the egress proxy resolves
``pypi.org``, ``files.pythonhosted.org`` and ``registry.npmjs.org`` to this server's address
in the stand-ins' network namespace (``egress.proxy_hosts``, the proxy's /etc/hosts) and
trusts only the test session's CA for upstream TLS (``proxy_upstream_ca``), which signed this
server's certificate for those names (conftest.py ``pypi_tls``).

    GET /simple/                      the project list
    GET /simple/<project>/            links to https://files.pythonhosted.org/packages/<file>
                                      with #sha256=, for every wheel of that project in --dist
    GET /packages/<file>              the wheel
Anything else is a 404; other methods a 405. Each request is one JSON line in ``--log``
(method, Host, path, status).

    python3 pypi_standin.py --bind 198.51.100.40 --cert C --key K --dist DIR --log F --ready F

``build_wheel`` writes the small pure-Python wheel the tests install (no download, no build
backend: a wheel is a zip with a dist-info).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import re
import ssl
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FILES_HOST = "files.pythonhosted.org"


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheel(dist: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of package ``name`` (its ``__version__`` is ``version``) in ``dist``."""
    dist.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'"""Built by the network tests."""\n__version__ = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            "Summary: Airlock's network test package\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: airlock-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{info}/top_level.txt": f"{name}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = dist / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--bind", "--cert", "--key", "--dist", "--log", "--ready"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    dist, log, lock = Path(args.dist), Path(args.log), threading.Lock()
    wheels = {w.name: w.read_bytes() for w in sorted(dist.glob("*.whl"))}
    projects: dict[str, list[str]] = {}
    for filename in wheels:
        projects.setdefault(normalize(filename.split("-")[0]), []).append(filename)

    def page(title: str, links: list[tuple[str, str]]) -> bytes:
        anchors = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>\n'
                          for href, text in links)
        return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n<body>\n"
                f"{anchors}</body></html>\n").encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            with lock, log.open("a") as f:
                f.write(json.dumps({"method": self.command, "host": self.headers.get("Host"),
                                    "path": self.path, "status": status}) + "\n")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0].split("#")[0]
            parts = [p for p in path.split("/") if p]
            if parts == ["simple"]:
                self.answer(200, page("Simple index", [(f"/simple/{p}/", p) for p in projects]),
                            "text/html")
            elif len(parts) == 2 and parts[0] == "simple" and parts[1] in projects:
                links = [(f"https://{FILES_HOST}/packages/{f}#sha256="
                          f"{hashlib.sha256(wheels[f]).hexdigest()}", f)
                         for f in projects[parts[1]]]
                self.answer(200, page(f"Links for {parts[1]}", links), "text/html")
            elif len(parts) == 2 and parts[0] == "packages" and parts[1] in wheels:
                self.answer(200, wheels[parts[1]], "application/octet-stream")
            else:
                self.answer(404, b"not found\n")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            self.answer(405, b"read-only stand-in\n")

        do_PUT = do_PATCH = do_DELETE = do_POST

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((args.bind, 443), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    Path(args.ready).touch()
    server.serve_forever()


if __name__ == "__main__":
    main()
