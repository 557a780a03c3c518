"""A local OpenAI-compatible chat-completions server for tests (scripted replies)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "sk-test-0123456789abcdef"

Behaviour = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]


def completion(content: str | None = "hello", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop", **extra}]}


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Behaviour:
    def run(h: BaseHTTPRequestHandler, _: dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return run


def stall(seconds: float, echo: bool = False) -> Behaviour:
    def run(h: BaseHTTPRequestHandler, req: dict[str, Any]) -> None:
        time.sleep(seconds)
        text = req["messages"][-1]["content"] if echo else "late"
        reply(200, completion(text))(h, req)

    return run


class FakeServer:
    """Serves scripted behaviours in order (the last one repeats), or what ``router`` picks
    for each request body when it is set; records requests and their headers."""

    def __init__(self, router: Callable[[dict[str, Any]], Behaviour] | None = None) -> None:
        self.script: list[Behaviour] = [reply(200, completion())]
        self.router = router
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    if server.router is not None:
                        step = server.router(body)
                    elif len(server.script) > 1:
                        step = server.script.pop(0)
                    else:
                        step = server.script[0]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path != "/v1/chat/completions":
                        reply(404, {"error": "no such path"})(self, body)
                    else:
                        step(self, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out closes the socket before a stalled reply

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
