"""A stand-in of the Anthropic Messages API that plays one scripted conversation (stdlib only).

It exists because the real API is unreachable here: the agent job under test runs the real
Claude Agent SDK and its bundled CLI, which reach this through Airlock's egress proxy as their
``ANTHROPIC_BASE_URL`` (tests/network/test_agent.py runs it in the stand-ins' network namespace).

POST /v1/messages (any query string):
- with a Bash tool and no tool_result in the last user message: turn 1, a ``tool_use`` of Bash
  running ``--command``;
- with a tool_result: turn 2, the final text ``FINAL: the command said '<its first line>'``;
- any other (a helper without tools): a short text.
Streamed as the real API streams (message_start, content_block_start, ping, deltas,
content_block_stop, message_delta, message_stop; the body ends when the connection closes), or
one JSON message. GET /health answers "ok" (the sandbox's allowlisted fetch). Each request is
one JSON line in ``--log``: the API key only as its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOCK = threading.Lock()


def last_tool_result(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool_result block of the last *user* message (the CLI also sends system ones)."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if isinstance(content, list):
        return next((b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"),
                    None)
    return None


def tool_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content if isinstance(content, str) else ""


def reply(body: dict[str, Any], command: str) -> tuple[list[dict[str, Any]], str]:
    """(content blocks, stop reason) for a request."""
    tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
    if "Bash" not in tools:
        return [{"type": "text", "text": "Stand-in reply."}], "end_turn"
    result = last_tool_result(body)
    if result is None:
        return [{"type": "tool_use", "id": "toolu_standin_" + uuid.uuid4().hex[:16], "name": "Bash",
                 "input": {"command": command, "description": "Probe the sandbox"}}], "tool_use"
    lines = tool_text(result).strip().splitlines() or ["(empty)"]
    return [{"type": "text", "text": f"FINAL: the command said '{lines[0]}' "
             f"(is_error={result.get('is_error', False)})"}], "end_turn"


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream(blocks: list[dict[str, Any]], stop: str, model: str) -> list[bytes]:
    usage = {"input_tokens": 100, "output_tokens": 1, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    out = [sse("message_start", {"type": "message_start", "message": {
        "id": "msg_standin_" + uuid.uuid4().hex[:16], "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": usage}})]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            start, kind, key, whole = {"type": "text", "text": ""}, "text_delta", "text", block["text"]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            kind, key, whole = "input_json_delta", "partial_json", json.dumps(block["input"])
        out.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": start}))
        out.append(sse("ping", {"type": "ping"}))
        for part in (whole[: len(whole) // 2], whole[len(whole) // 2:]):
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": kind, key: part}}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 20},
                                     "delta": {"stop_reason": stop, "stop_sequence": None}}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bash_command = "true"  # (not "command": the handler keeps the HTTP method there)
    log_path = "/dev/null"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass  # one JSON line per request instead

    def note(self, entry: dict[str, Any]) -> None:
        key = self.headers.get("x-api-key") or ""
        entry |= {"t": round(time.time(), 3), "path": self.path,
                  "api_key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
                  "user_agent": self.headers.get("user-agent")}
        with LOCK, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def answer(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.note({"method": "GET"})
        if self.path == "/health":
            return self.answer(200, b"ok", "text/plain")
        return self.answer(404, b'{"type":"error","error":{"type":"not_found_error"}}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if self.path.split("?")[0] != "/v1/messages":
            self.note({"method": "POST", "unknown": True})
            return self.answer(404, b'{"type":"error","error":{"type":"not_found_error"}}')
        blocks, stop = reply(body, self.bash_command)
        result = last_tool_result(body)
        self.note({"method": "POST", "stream": bool(body.get("stream")), "stop_reason": stop,
                   "tool_result": None if result is None else
                   {"is_error": result.get("is_error", False), "text": tool_text(result)}})
        model = str(body.get("model", "claude-standin"))
        if not body.get("stream"):
            message = {"id": "msg_standin", "type": "message", "role": "assistant", "model": model,
                       "content": blocks, "stop_reason": stop, "stop_sequence": None,
                       "usage": {"input_tokens": 100, "output_tokens": 20}}
            return self.answer(200, json.dumps(message).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for chunk in stream(blocks, stop, model):
            self.wfile.write(chunk)
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--log", required=True)
    parser.add_argument("--command", required=True, help="what turn 1 asks the Bash tool to run")
    parser.add_argument("--ready", help="a file written once listening")
    args = parser.parse_args()
    Handler.bash_command, Handler.log_path = args.command, args.log
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("listening\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
