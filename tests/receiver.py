"""A merchant's event receiver for tests: a real HTTP server on loopback that records every
delivery and answers with the status codes it is told to (then 200); a 3xx points ``Location`` at
``location`` (default: its own ``/login``, a page a GET gets 200 from)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, answers: list[int] | None = None, delay: float = 0.0, port: int = 0,
                 location: str | None = None):
        self.answers = list(answers or [])
        self.delay = delay
        self.location = location
        self.hits: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.hits.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                          "status": status, "method": "POST"})
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", receiver.location or receiver.url.replace("/events", "/login"))
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                page = b"<html>log in</html>"
                with receiver._lock:
                    receiver.hits.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": b"",
                                          "status": 200, "method": "GET"})
                self.send_response(200)
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered 2xx, in the order they arrived."""
        return [json.loads(h["body"]) for h in self.hits if 200 <= h["status"] < 300 and h["method"] == "POST"]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.delivered()) >= count:
                return self.delivered()
            time.sleep(0.05)
        raise AssertionError(f"{len(self.delivered())} of {count} events delivered: {self.hits}")
