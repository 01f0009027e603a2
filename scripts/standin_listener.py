#!/usr/bin/env python3
"""A stand-in service that counts every contact, for Airlock's network tests.

Binds one address on the given TCP and UDP ports and, for each accepted TCP
connection or received UDP datagram, adds 1 to the integer in HITS_FILE (the
file, not memory, holds the count, so `standins.sh reset` can zero it while we
run). A UDP datagram on port 53 gets a DNS REFUSED answer, so a resolver that
forwards to us fails at once and the hit is unambiguous.

Usage: standin_listener.py HITS_FILE ADDRESS --tcp 80,443 --udp 53 [--ready FILE]
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
from pathlib import Path


def bump(hits: Path) -> None:
    try:
        count = int(hits.read_text() or "0")
    except (FileNotFoundError, ValueError):
        count = 0
    tmp = hits.with_suffix(".tmp")
    tmp.write_text(f"{count + 1}\n")
    os.replace(tmp, hits)


def dns_refused(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    flags = bytes([query[2] | 0x80, (query[3] & 0xF0) | 0x05])  # QR=1, RCODE=REFUSED
    return query[:2] + flags + query[4:]


def open_sockets(address: str, tcp: list[int], udp: list[int]) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    socks = []
    for kind, ports in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
        for port in ports:
            sock = socket.socket(family, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(64)
            sock.setblocking(False)
            socks.append(sock)
    return socks


def serve(hits: Path, socks: list[socket.socket]) -> None:
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                if ready.type == socket.SOCK_STREAM:
                    conn, _ = ready.accept()
                    conn.close()
                else:
                    data, peer = ready.recvfrom(4096)
                    answer = dns_refused(data) if ready.getsockname()[1] == 53 else None
                    if answer:
                        ready.sendto(answer, peer)
            except OSError:
                continue
            bump(hits)


def ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("hits", type=Path)
    parser.add_argument("address")
    parser.add_argument("--tcp", type=ports, default=[])
    parser.add_argument("--udp", type=ports, default=[])
    parser.add_argument("--ready", type=Path, help="written once every socket is bound")
    args = parser.parse_args()
    socks = open_sockets(args.address, args.tcp, args.udp)
    if not args.hits.exists():
        args.hits.write_text("0\n")
    if args.ready:
        args.ready.write_text(f"{os.getpid()}\n")
    serve(args.hits, socks)


if __name__ == "__main__":
    main()
