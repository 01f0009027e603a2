"""A tenant's endpoint, stood in for: an HTTP/1.1 server (keep-alive) on one address of the
stand-ins' network namespace, answering every GET with its own name and counting the hits.

    python3 endpoint_standin.py --bind 198.51.100.31 --name a.tenant.test --hits FILE --ready FILE
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--bind", "--name", "--hits", "--ready"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    hits, lock = Path(args.hits), threading.Lock()
    hits.write_text("0")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                hits.write_text(str(int(hits.read_text() or 0) + 1))
            body = f"endpoint {args.name} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((args.bind, 80), Handler)
    server.daemon_threads = True
    Path(args.ready).touch()
    server.serve_forever()


if __name__ == "__main__":
    main()
